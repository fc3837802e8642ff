
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
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;completions'= {
            cand --dir 'Write the files for every shell into this directory instead of printing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'ydht;help'= {
            cand completions 'Print shell completions (or write every shell''s file with --dir)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;help;completions'= {
        }
        &'ydht;help;help'= {
        }
    ]
    $completions[$command]
}
