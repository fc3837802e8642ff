# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ydht_global_optspecs
    string join \n h/help V/version
end

function __fish_ydht_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_ydht_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_ydht_using_subcommand
    set -l cmd (__fish_ydht_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c ydht -n "__fish_ydht_needs_command" -s h -l help -d 'Print help'
complete -c ydht -n "__fish_ydht_needs_command" -s V -l version -d 'Print version'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "completions" -d 'Print shell completions (or write every shell\'s file with --dir)'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "top" -d 'Live dashboard of the cluster: ring, replication, gateway traffic, history, events'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand completions" -l dir -d 'Write the files for every shell into this directory instead of printing' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand completions" -s h -l help -d 'Print help'
complete -c ydht -n "__fish_ydht_using_subcommand top" -l gateway -d 'Base URL of the gateway to watch' -r
complete -c ydht -n "__fish_ydht_using_subcommand top" -l interval -d 'How often to poll the services, e.g. 500ms, 1s, 5s' -r
complete -c ydht -n "__fish_ydht_using_subcommand top" -l cluster-secret -d 'Cluster secret for the internal endpoints [default: read from <data-dir>/cluster.secret]' -r
complete -c ydht -n "__fish_ydht_using_subcommand top" -l data-dir -d 'Data dir holding cluster.secret when no secret is given [default: the platform data dir]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand top" -s h -l help -d 'Print help'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from completions top help" -f -a "completions" -d 'Print shell completions (or write every shell\'s file with --dir)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from completions top help" -f -a "top" -d 'Live dashboard of the cluster: ring, replication, gateway traffic, history, events'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from completions top help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
