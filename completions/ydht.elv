
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
            cand top 'Live dashboard of the cluster: ring, replication, gateway traffic, history, events'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;completions'= {
            cand --dir 'Write the files for every shell into this directory instead of printing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'ydht;top'= {
            cand --gateway 'Base URL of the gateway to watch'
            cand --interval 'How often to poll the services, e.g. 500ms, 1s, 5s'
            cand --cluster-secret 'Cluster secret for the internal endpoints [default: read from <data-dir>/cluster.secret]'
            cand --data-dir 'Data dir holding cluster.secret when no secret is given [default: the platform data dir]'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'ydht;help'= {
            cand completions 'Print shell completions (or write every shell''s file with --dir)'
            cand top 'Live dashboard of the cluster: ring, replication, gateway traffic, history, events'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;help;completions'= {
        }
        &'ydht;help;top'= {
        }
        &'ydht;help;help'= {
        }
    ]
    $completions[$command]
}
