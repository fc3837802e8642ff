
use builtin;
use str;

set edit:completion:arg-completer[ydht] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'ydht'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'ydht'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
            cand completions 'Print shell completions (or write every shell''s file with --dir)'
            cand serve 'Run a server'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;completions'= {
            cand --dir 'Write the files for every shell into this directory instead of printing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'ydht;serve'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand users 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;serve;users'= {
            cand --data-dir 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]'
            cand --host 'Address to bind; use 0.0.0.0 to accept connections from other machines'
            cand --cluster-secret 'Shared secret guarding internal endpoints [default: generated once into the data dir]'
            cand --port 'Port to listen on'
            cand --database-url 'Database: postgres://user:pass@host:5432/db or sqlite:///path/users.db [default: <data-dir>/users.db]'
            cand --jwt-secret 'Secret signing access tokens (HS256) [default: generated once into <data-dir>/jwt.secret]'
            cand --jwt-expiration 'Access-token lifetime, e.g. 15m, 1h, 24h'
            cand --secure-cookies 'Mark cookies `Secure` (set when the pages are served over HTTPS)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'ydht;serve;help'= {
            cand users 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;serve;help;users'= {
        }
        &'ydht;serve;help;help'= {
        }
        &'ydht;help'= {
            cand completions 'Print shell completions (or write every shell''s file with --dir)'
            cand serve 'Run a server'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;help;completions'= {
        }
        &'ydht;help;serve'= {
            cand users 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
        }
        &'ydht;help;serve;users'= {
        }
        &'ydht;help;help'= {
        }
    ]
    $completions[$command]
}
