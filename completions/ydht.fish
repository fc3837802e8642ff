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
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -s h -l help -d 'Print help'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "all" -d 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "node" -d 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "replicator" -d 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "users" -d 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "gateway" -d 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l data-dir -d 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l host -d 'Address to bind; use 0.0.0.0 to accept connections from other machines' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l cluster-secret -d 'Shared secret guarding internal endpoints [default: generated once into the data dir]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l nodes -d 'Number of storage nodes (node-1, node-2, …)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l gateway-port -d 'Gateway port (0 picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l users-port -d 'Users service port (0 picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l node-port -d 'Port of node-1; the others take the next free numbers (0: every node picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l replicator-port -d 'Replicator port (0 picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -s h -l help -d 'Print help'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l port -d 'Port to listen on' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l node-id -d 'This node\'s id; its WAL and snapshots live in <data-dir>/<node-id>/' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l max-value-bytes -d 'Largest value accepted, in bytes (larger bodies get 413 before being read)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l wal-max-bytes -d 'Snapshot and start a new WAL segment when the active one reaches this many bytes' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l sync-mode -d 'group: concurrent writes share one fdatasync; per-write: one fdatasync per write (for benchmarks)' -r -f -a "group\t'Concurrent appends share one fdatasync (the default)'
per-write\t'Every append gets its own fdatasync (slow; for benchmark comparison)'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l tombstone-grace -d 'How long tombstones and expired entries keep their version before being purged' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l peers -d 'Every storage node of the cluster, this one included (id=url,…; same format as the gateway\'s); enables anti-entropy with the others' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l replicas -d 'Copies kept of every key (must match the gateway\'s; decides which keys this node shares with each peer)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l vnodes -d 'Virtual nodes per physical node on the ring (must match the gateway\'s)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l anti-entropy-interval -d 'Time between anti-entropy rounds with the peers; 0 disables anti-entropy' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l anti-entropy-max-keys -d 'Most records one anti-entropy round transfers (pulled + pushed), so repairs never starve client traffic' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l data-dir -d 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l host -d 'Address to bind; use 0.0.0.0 to accept connections from other machines' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l cluster-secret -d 'Shared secret guarding internal endpoints [default: generated once into the data dir]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l salvage-wal -d 'Start despite a corrupt WAL segment by truncating it at the first bad record (later records are lost)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -s h -l help -d 'Print help (see more with \'--help\')'
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
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l data-dir -d 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l host -d 'Address to bind; use 0.0.0.0 to accept connections from other machines' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l cluster-secret -d 'Shared secret guarding internal endpoints [default: generated once into the data dir]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l port -d 'Port to listen on' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l database-url -d 'Database: postgres://user:pass@host:5432/db or sqlite:///path/users.db [default: <data-dir>/users.db]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l jwt-secret -d 'Secret signing access tokens (HS256) [default: generated once into <data-dir>/jwt.secret]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l jwt-expiration -d 'Access-token lifetime, e.g. 15m, 1h, 24h' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l gateway-url -d 'Base URL of the gateway, for the dashboard\'s key browser' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l secure-cookies -d 'Mark cookies `Secure` (set when the pages are served over HTTPS)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -s h -l help -d 'Print help'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l data-dir -d 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l host -d 'Address to bind; use 0.0.0.0 to accept connections from other machines' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l cluster-secret -d 'Shared secret guarding internal endpoints [default: generated once into the data dir]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l port -d 'Port to listen on (0 picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l nodes -d 'Storage nodes: comma-separated `id=http://host:port` (or bare URLs)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l replicator-url -d 'Base URL of the replicator' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l users-url -d 'Base URL of the users service (API-key validation, usage)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l replicas -d 'Copies kept of every key (N)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l vnodes -d 'Virtual nodes per storage node on the ring' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l rate-limit-per-minute -d 'Requests per minute each user\'s bucket refills (0 disables rate limiting)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l rate-limit-burst -d 'Requests a user may make in a burst' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l max-value-bytes -d 'Largest value accepted, in bytes (larger → 413)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -s h -l help -d 'Print help'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "all" -d 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "node" -d 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "replicator" -d 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "users" -d 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "gateway" -d 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand completions" -l dir -d 'Write the files for every shell into this directory instead of printing' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand completions" -s h -l help -d 'Print help'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions help" -f -a "serve" -d 'Run a server (one service of the cluster)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions help" -f -a "completions" -d 'Print shell completions (or write every shell\'s file with --dir)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "all" -d 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "node" -d 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "replicator" -d 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "users" -d 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "gateway" -d 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency'
