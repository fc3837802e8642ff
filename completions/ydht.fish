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
complete -c ydht -n "__fish_ydht_needs_command" -f -a "serve" -d 'Run a server (one service of the cluster)'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "completions" -d 'Print shell completions (or write every shell\'s file with --dir)'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from replicator help" -s h -l help -d 'Print help'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from replicator help" -f -a "replicator" -d 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from replicator help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l data-dir -d 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l host -d 'Address to bind; use 0.0.0.0 to accept connections from other machines' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l cluster-secret -d 'Shared secret guarding internal endpoints [default: generated once into the data dir]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l port -d 'Port to listen on (0 picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l max-queue -d 'Most unfinished jobs kept; beyond it new jobs get 503 with Retry-After' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l max-queue-bytes -d 'Most bytes of values held by unfinished jobs; beyond it new jobs get 503' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l max-value-bytes -d 'Largest value a job may carry, in bytes; larger bodies get 413' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l wait-timeout -d 'With `x-ydht-wait`, how long to wait for the acknowledgements before answering 504' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l retry-base -d 'Delay before the first retry of a failed replica write (doubles each retry, plus jitter)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l probe-interval -d 'How often nodes holding hinted handoffs are probed with /health' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l request-timeout -d 'Timeout of one request to a node' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l compact-bytes -d 'Rewrite the queue log when it grows past this many bytes (mostly finished work)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -s h -l help -d 'Print help'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "replicator" -d 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand completions" -l dir -d 'Write the files for every shell into this directory instead of printing' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand completions" -s h -l help -d 'Print help'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions help" -f -a "serve" -d 'Run a server (one service of the cluster)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions help" -f -a "completions" -d 'Print shell completions (or write every shell\'s file with --dir)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "replicator" -d 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
