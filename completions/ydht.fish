# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_ydht_global_optspecs
    string join \n output= gateway= users= api-key= config-dir= ca-file= h/help V/version
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

complete -c ydht -n "__fish_ydht_needs_command" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_needs_command" -l gateway -r
complete -c ydht -n "__fish_ydht_needs_command" -l users -r
complete -c ydht -n "__fish_ydht_needs_command" -l api-key -r
complete -c ydht -n "__fish_ydht_needs_command" -l config-dir -r -F
complete -c ydht -n "__fish_ydht_needs_command" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_needs_command" -s V -l version -d 'Print version'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "serve" -d 'Run a server (one service of the cluster)'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "completions" -d 'Print shell completions (or write every shell\'s file with --dir)'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "top" -d 'Live dashboard of the cluster: ring, replication, gateway traffic, history, events'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "signup" -d 'Create an account and log in'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "login" -d 'Log in; tokens are kept in the config dir (mode 0600) and refreshed automatically'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "logout" -d 'Revoke the login session and forget its tokens'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "whoami" -d 'Show who is logged in'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "apikey" -d 'Manage your API keys'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "kv" -d 'Store, read, delete, count, list and locate your keys (uses an API key)'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "cluster" -d 'Change the cluster online: join or remove storage nodes, watch the data move'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "status" -d 'Health and metrics of every service, as one table; exit 4 if any is down'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "backup" -d 'Copy every live record of the cluster (or of one tenant) into a compressed, checksummed file'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "restore" -d 'Write a backup file\'s records back into the running cluster (newer data already there stays)'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "man" -d 'Print the manual page (or write one per command with --dir)'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "bench" -d 'Load generator: throughput and latency percentiles of puts/gets (gateway, or one node with --target-node)'
complete -c ydht -n "__fish_ydht_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "all" -d 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "node" -d 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "replicator" -d 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "users" -d 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "gateway" -d 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and not __fish_seen_subcommand_from all node replicator users gateway help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l data-dir -d 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l host -d 'Address to bind; use 0.0.0.0 to accept connections from other machines' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l cluster-secret -d 'Shared secret guarding internal endpoints [default: generated once into the data dir]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l tls-cert -d 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l tls-key -d 'PEM private key of --tls-cert' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l log-format -d 'Log lines as text, or as one JSON object per line (for log collectors)' -r -f -a "text\t'Human-readable lines (coloured on a terminal)'
json\t'One JSON object per line: timestamp, level, message, fields and the spans (request ids)'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l nodes -d 'Number of storage nodes (node-1, node-2, …)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l gateway-port -d 'Gateway port (0 picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l users-port -d 'Users service port (0 picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l node-port -d 'Port of node-1; the others take the next free numbers (0: every node picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l replicator-port -d 'Replicator port (0 picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from all" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l port -d 'Port to listen on' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l node-id -d 'This node\'s id; its WAL and snapshots live in <data-dir>/<node-id>/' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l max-value-bytes -d 'Largest value accepted, in bytes (larger bodies get 413 before being read)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l wal-max-bytes -d 'Snapshot and start a new WAL segment when the active one reaches this many bytes' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l sync-mode -d 'group: concurrent writes share one fdatasync; per-write: one fdatasync per write (for benchmarks)' -r -f -a "group\t''
per-write\t''"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l feed-retention -d 'How long the change feed (`GET /feed`, for watches) keeps changes: WAL segments a snapshot covers are removed only once they were last written this long ago (0: at once)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l feed-retention-changes -d 'How many changes the change feed keeps at least: a WAL segment a snapshot covers is also kept until this many WAL entries were logged after it (0: no minimum)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l tombstone-grace -d 'How long tombstones and expired entries keep their version before being purged; with peers, a tombstone is purged only once every peer is also known to hold it (a peer that is down holds them back)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l peers -d 'Every storage node of the cluster, this one included (id=url,… or bare URLs, the gateway\'s format; a bare URL is this node when it is its --advertise-url or the host:port it listens on); enables anti-entropy with the others' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l replicas -d 'Copies kept of every key (must match the gateway\'s; decides which keys this node shares with each peer)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l vnodes -d 'Virtual nodes per physical node on the ring (must match the gateway\'s)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l anti-entropy-interval -d 'Time between anti-entropy rounds with the peers; 0 disables anti-entropy' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l anti-entropy-max-keys -d 'Most records one anti-entropy round transfers (pulled + pushed), so repairs never starve client traffic' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l join -d 'Register this node at start through the gateway at this URL and follow the cluster membership: online joins and removals, rebalancing, anti-entropy with every member' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l advertise-url -d 'The URL other services reach this node at [default: http(s)://HOST:PORT it bound]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l rebalance-rate -d 'Most records per second this node pulls while rebalancing after a membership change' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l data-dir -d 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l host -d 'Address to bind; use 0.0.0.0 to accept connections from other machines' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l cluster-secret -d 'Shared secret guarding internal endpoints [default: generated once into the data dir]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l tls-cert -d 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l tls-key -d 'PEM private key of --tls-cert' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l log-format -d 'Log lines as text, or as one JSON object per line (for log collectors)' -r -f -a "text\t'Human-readable lines (coloured on a terminal)'
json\t'One JSON object per line: timestamp, level, message, fields and the spans (request ids)'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -l salvage-wal -d 'Start despite a corrupt WAL segment by truncating it at the first bad record (later records are lost)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from node" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l data-dir -d 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l host -d 'Address to bind; use 0.0.0.0 to accept connections from other machines' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l cluster-secret -d 'Shared secret guarding internal endpoints [default: generated once into the data dir]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l tls-cert -d 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l tls-key -d 'PEM private key of --tls-cert' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l log-format -d 'Log lines as text, or as one JSON object per line (for log collectors)' -r -f -a "text\t'Human-readable lines (coloured on a terminal)'
json\t'One JSON object per line: timestamp, level, message, fields and the spans (request ids)'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l port -d 'Port to listen on (0 picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l max-queue -d 'Most unfinished jobs kept; beyond it new jobs get 503 with Retry-After' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l max-queue-bytes -d 'Most bytes of values held by unfinished jobs; beyond it new jobs get 503' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l max-value-bytes -d 'Largest value a job may carry, in bytes; larger bodies get 413' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l wait-timeout -d 'With `x-ydht-wait`, how long to wait for the acknowledgements before answering 504' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l retry-base -d 'Delay before the first retry of a failed replica write (doubles each retry, plus jitter)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l probe-interval -d 'How often nodes holding hinted handoffs are probed with /health' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l request-timeout -d 'Timeout of one request to a node' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l compact-bytes -d 'Rewrite the queue log when it grows past this many bytes (mostly finished work)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l users-url -d 'Follow the cluster membership at this users service: copies for a node that left the cluster (`ydht cluster leave`, also `--force`) go to the key\'s current owners instead' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l replicas -d 'Copies kept of every key (N), as the gateway\'s (to find a key\'s owners)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l vnodes -d 'Virtual nodes per storage node on the ring, as the gateway\'s' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from replicator" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l data-dir -d 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l host -d 'Address to bind; use 0.0.0.0 to accept connections from other machines' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l cluster-secret -d 'Shared secret guarding internal endpoints [default: generated once into the data dir]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l tls-cert -d 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l tls-key -d 'PEM private key of --tls-cert' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l log-format -d 'Log lines as text, or as one JSON object per line (for log collectors)' -r -f -a "text\t'Human-readable lines (coloured on a terminal)'
json\t'One JSON object per line: timestamp, level, message, fields and the spans (request ids)'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l port -d 'Port to listen on' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l database-url -d 'Database: postgres://user:pass@host:5432/db or sqlite:///path/users.db [default: <data-dir>/users.db]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l jwt-secret -d 'Secret signing access tokens (HS256) [default: generated once into <data-dir>/jwt.secret]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l jwt-expiration -d 'Access-token lifetime, e.g. 15m, 1h, 24h' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l gateway-url -d 'Base URL of the gateway, for the dashboard\'s key browser' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l signups-per-hour -d 'Sign-ups allowed per client address (IPv6: per /64) and hour; 0 = no limit' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -l secure-cookies -d 'Mark cookies `Secure` (set when the pages are served over HTTPS)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from users" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l data-dir -d 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l host -d 'Address to bind; use 0.0.0.0 to accept connections from other machines' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l cluster-secret -d 'Shared secret guarding internal endpoints [default: generated once into the data dir]' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l tls-cert -d 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l tls-key -d 'PEM private key of --tls-cert' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l log-format -d 'Log lines as text, or as one JSON object per line (for log collectors)' -r -f -a "text\t'Human-readable lines (coloured on a terminal)'
json\t'One JSON object per line: timestamp, level, message, fields and the spans (request ids)'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l port -d 'Port to listen on (0 picks a free one)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l nodes -d 'Storage nodes: comma-separated `id=http://host:port` (or bare URLs)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l replicator-url -d 'Base URL of the replicator' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l users-url -d 'Base URL of the users service (API-key validation, usage)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l replicas -d 'Copies kept of every key (N)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l vnodes -d 'Virtual nodes per storage node on the ring' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l rate-limit-per-minute -d 'Requests per minute each user\'s bucket refills (0 disables rate limiting)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l rate-limit-burst -d 'Requests a user may make in a burst' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l max-value-bytes -d 'Largest value accepted, in bytes (larger → 413)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l auth-failures-per-minute -d 'Failed API-key checks allowed per client address and minute before 429 (0 disables)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l max-clock-offset -d 'Largest offset between this gateway\'s clock and the storage nodes\' (median) it writes with; past it writes get 503 until the clocks agree again (`500ms`, `2s`)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l max-watches-per-tenant -d 'Most watches (`GET /v1/watch`) one account may have open on this gateway (429 past it)' -r
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from gateway" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "all" -d 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "node" -d 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "replicator" -d 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "users" -d 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "gateway" -d 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency'
complete -c ydht -n "__fish_ydht_using_subcommand serve; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand completions" -l dir -d 'Write the files for every shell into this directory instead of printing' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand completions" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand completions" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand top" -l interval -d 'How often to poll the services, e.g. 500ms, 1s, 5s' -r
complete -c ydht -n "__fish_ydht_using_subcommand top" -l cluster-secret -d 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]' -r
complete -c ydht -n "__fish_ydht_using_subcommand top" -l data-dir -d 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand top" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand top" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand top" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand top" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand top" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand signup" -l email -d 'Account email' -r
complete -c ydht -n "__fish_ydht_using_subcommand signup" -l username -d 'Account name: 3–32 letters, digits, `_` or `-`' -r
complete -c ydht -n "__fish_ydht_using_subcommand signup" -l users -d 'Users service base URL [default: config.json\'s users_url, else http://127.0.0.1:8081]' -r
complete -c ydht -n "__fish_ydht_using_subcommand signup" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand signup" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand signup" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand signup" -l password-stdin -d 'Read the password from stdin instead of prompting (for scripts)'
complete -c ydht -n "__fish_ydht_using_subcommand signup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand login" -l email -d 'Account email' -r
complete -c ydht -n "__fish_ydht_using_subcommand login" -l users -d 'Users service base URL [default: config.json\'s users_url, else http://127.0.0.1:8081]' -r
complete -c ydht -n "__fish_ydht_using_subcommand login" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand login" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand login" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand login" -l password-stdin -d 'Read the password from stdin instead of prompting (for scripts)'
complete -c ydht -n "__fish_ydht_using_subcommand login" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand logout" -l users -d 'Users service base URL [default: config.json\'s users_url, else http://127.0.0.1:8081]' -r
complete -c ydht -n "__fish_ydht_using_subcommand logout" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand logout" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand logout" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand logout" -l all -d 'Also forget the default API key stored by `apikey create --use`'
complete -c ydht -n "__fish_ydht_using_subcommand logout" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand whoami" -l users -d 'Users service base URL [default: config.json\'s users_url, else http://127.0.0.1:8081]' -r
complete -c ydht -n "__fish_ydht_using_subcommand whoami" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand whoami" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand whoami" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand whoami" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and not __fish_seen_subcommand_from create list revoke help" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and not __fish_seen_subcommand_from create list revoke help" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and not __fish_seen_subcommand_from create list revoke help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and not __fish_seen_subcommand_from create list revoke help" -f -a "create" -d 'Create an API key (its full value is shown once)'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and not __fish_seen_subcommand_from create list revoke help" -f -a "list" -d 'List your API keys (never their full value)'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and not __fish_seen_subcommand_from create list revoke help" -f -a "revoke" -d 'Revoke an API key by id; it stops working at the gateway within seconds'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and not __fish_seen_subcommand_from create list revoke help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from create" -l name -d 'A name to recognise the key by' -r
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from create" -l scopes -d 'Comma-separated scopes' -r -f -a "read\t''
write\t''
admin\t''"
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from create" -l expires-in-days -d 'Days until the key expires, 1–3650 [default: never]' -r
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from create" -l users -d 'Users service base URL [default: config.json\'s users_url, else http://127.0.0.1:8081]' -r
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from create" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from create" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from create" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from create" -l use -d 'Store the key as the default for `ydht kv` (in credentials.json, mode 0600)'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from list" -l users -d 'Users service base URL [default: config.json\'s users_url, else http://127.0.0.1:8081]' -r
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from list" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from list" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from list" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from revoke" -l users -d 'Users service base URL [default: config.json\'s users_url, else http://127.0.0.1:8081]' -r
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from revoke" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from revoke" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from revoke" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from revoke" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from help" -f -a "create" -d 'Create an API key (its full value is shown once)'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from help" -f -a "list" -d 'List your API keys (never their full value)'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from help" -f -a "revoke" -d 'Revoke an API key by id; it stops working at the gateway within seconds'
complete -c ydht -n "__fish_ydht_using_subcommand apikey; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -f -a "put" -d 'Store a value: from VALUE, --file, or stdin (binary-safe)'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -f -a "get" -d 'Print a value\'s raw bytes (or write them to -o FILE); exit 1 if the key does not exist'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -f -a "delete" -d 'Delete a key; exit 1 if it does not exist'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -f -a "incr" -d 'Add to an integer counter (decimal text) with compare-and-set; a missing key counts from 0'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -f -a "list" -d 'List your keys'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -f -a "locate" -d 'Show a key\'s primary and replicas and the version each holds (needs the cluster secret)'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -f -a "import" -d 'Load keys from a JSON-lines file (key, value or value_base64, content_type, ttl), in batches'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -f -a "export" -d 'Write every key (or those under --prefix) as JSON lines, with its TTL left, to stdout'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -f -a "watch" -d 'Print changes (put, delete, expire) as they happen until Ctrl-C; reconnects and resumes by itself'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and not __fish_seen_subcommand_from put get delete incr list locate import export watch help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -s f -l file -d 'Read the value from this file' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -l ttl -d 'Expire the key after this long: 30s, 30m, 1h, 24h, 1h30m' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -l consistency -d 'Consistency level of the write [default: eventual]' -r -f -a "eventual\t'The primary has it durably; replicas follow in the background'
strong\t'A majority of the replicas has it durably (reads: newest of a majority)'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -l content-type -d 'Content type stored with the value [default: application/octet-stream]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -l if-version -d 'Write only if the key is at this version (as `kv get --show-version` prints it); else exit 5' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -l api-key -d 'API key [default: the one stored by `apikey create --use`]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -l if-absent -d 'Write only if the key does not exist (absent, deleted or expired); else exit 5'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from put" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from get" -s o -l output-file -d 'Write the value to this file instead of stdout' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from get" -l consistency -d 'Consistency level of the read [default: eventual]' -r -f -a "eventual\t'The primary has it durably; replicas follow in the background'
strong\t'A majority of the replicas has it durably (reads: newest of a majority)'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from get" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from get" -l api-key -d 'API key [default: the one stored by `apikey create --use`]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from get" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from get" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from get" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from get" -l show-version -d 'Also print the value\'s version (`version: V` after the value), for --if-version'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from get" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from delete" -l consistency -d 'Consistency level of the delete [default: eventual]' -r -f -a "eventual\t'The primary has it durably; replicas follow in the background'
strong\t'A majority of the replicas has it durably (reads: newest of a majority)'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from delete" -l if-version -d 'Delete only if the key is at this version; else exit 5' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from delete" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from delete" -l api-key -d 'API key [default: the one stored by `apikey create --use`]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from delete" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from delete" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from delete" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from incr" -l by -d 'How much to add (negative to subtract)' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from incr" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from incr" -l api-key -d 'API key [default: the one stored by `apikey create --use`]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from incr" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from incr" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from incr" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from incr" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from list" -l prefix -d 'Only keys starting with this prefix' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from list" -l limit -d 'Show at most this many keys [default: all]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from list" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from list" -l api-key -d 'API key [default: the one stored by `apikey create --use`]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from list" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from list" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from list" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from locate" -l cluster-secret -d 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from locate" -l data-dir -d 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from locate" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from locate" -l users -d 'Users service base URL [default: config.json\'s users_url, else http://127.0.0.1:8081]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from locate" -l api-key -d 'API key [default: the one stored by `apikey create --use`]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from locate" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from locate" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from locate" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from locate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from import" -l consistency -d 'Consistency level of the writes [default: eventual]' -r -f -a "eventual\t'The primary has it durably; replicas follow in the background'
strong\t'A majority of the replicas has it durably (reads: newest of a majority)'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from import" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from import" -l api-key -d 'API key [default: the one stored by `apikey create --use`]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from import" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from import" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from import" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from export" -l prefix -d 'Only keys starting with this prefix' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from export" -l consistency -d 'Consistency level of the reads [default: eventual]' -r -f -a "eventual\t'The primary has it durably; replicas follow in the background'
strong\t'A majority of the replicas has it durably (reads: newest of a majority)'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from export" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from export" -l api-key -d 'API key [default: the one stored by `apikey create --use`]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from export" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from export" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from export" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from watch" -l prefix -d 'Watch the keys starting with this prefix (default: every key)' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from watch" -l since -d 'Start after this cursor (an event\'s id, printed with --output json) instead of now' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from watch" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from watch" -l api-key -d 'API key [default: the one stored by `apikey create --use`]' -r
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from watch" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from watch" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from watch" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from watch" -l values -d 'Include each put\'s value in the output'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from watch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from help" -f -a "put" -d 'Store a value: from VALUE, --file, or stdin (binary-safe)'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from help" -f -a "get" -d 'Print a value\'s raw bytes (or write them to -o FILE); exit 1 if the key does not exist'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete a key; exit 1 if it does not exist'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from help" -f -a "incr" -d 'Add to an integer counter (decimal text) with compare-and-set; a missing key counts from 0'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from help" -f -a "list" -d 'List your keys'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from help" -f -a "locate" -d 'Show a key\'s primary and replicas and the version each holds (needs the cluster secret)'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from help" -f -a "import" -d 'Load keys from a JSON-lines file (key, value or value_base64, content_type, ttl), in batches'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from help" -f -a "export" -d 'Write every key (or those under --prefix) as JSON lines, with its TTL left, to stdout'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from help" -f -a "watch" -d 'Print changes (put, delete, expire) as they happen until Ctrl-C; reconnects and resumes by itself'
complete -c ydht -n "__fish_ydht_using_subcommand kv; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and not __fish_seen_subcommand_from join leave status help" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and not __fish_seen_subcommand_from join leave status help" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and not __fish_seen_subcommand_from join leave status help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and not __fish_seen_subcommand_from join leave status help" -f -a "join" -d 'Add a storage node to the ring; its share of the keys moves to it while the cluster keeps serving (the node must run with --join, which registers it by itself)'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and not __fish_seen_subcommand_from join leave status help" -f -a "leave" -d 'Remove a storage node; its keys move to the others before it goes (--force: it is dead, rebuild from the copies)'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and not __fish_seen_subcommand_from join leave status help" -f -a "status" -d 'The members, their states (joining, active, leaving, down) and the progress of a change'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and not __fish_seen_subcommand_from join leave status help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from join" -l id -d 'The node\'s id [default: asked from the node\'s /health]' -r
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from join" -l cluster-secret -d 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]' -r
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from join" -l data-dir -d 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from join" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from join" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from join" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from join" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from join" -l no-wait -d 'Return once the change is recorded, without waiting for the data to move'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from join" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from leave" -l cluster-secret -d 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]' -r
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from leave" -l data-dir -d 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from leave" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from leave" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from leave" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from leave" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from leave" -l force -d 'The node is gone for good: rebuild its keys from the other copies instead of from it'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from leave" -l no-wait -d 'Return once the change is recorded, without waiting for the data to move'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from leave" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from status" -l cluster-secret -d 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]' -r
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from status" -l data-dir -d 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from status" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from status" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from status" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from status" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "join" -d 'Add a storage node to the ring; its share of the keys moves to it while the cluster keeps serving (the node must run with --join, which registers it by itself)'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "leave" -d 'Remove a storage node; its keys move to the others before it goes (--force: it is dead, rebuild from the copies)'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "status" -d 'The members, their states (joining, active, leaving, down) and the progress of a change'
complete -c ydht -n "__fish_ydht_using_subcommand cluster; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand status" -l cluster-secret -d 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]' -r
complete -c ydht -n "__fish_ydht_using_subcommand status" -l data-dir -d 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand status" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand status" -l users -d 'Users service base URL [default: config.json\'s users_url, else http://127.0.0.1:8081]' -r
complete -c ydht -n "__fish_ydht_using_subcommand status" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand status" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand status" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand backup" -l out -d 'Write the backup to this file (replaced if it exists; written to FILE.partial first)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand backup" -l tenant -d 'Only this tenant\'s keys (its user id, as `ydht whoami` shows it)' -r
complete -c ydht -n "__fish_ydht_using_subcommand backup" -l cluster-secret -d 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]' -r
complete -c ydht -n "__fish_ydht_using_subcommand backup" -l data-dir -d 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand backup" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand backup" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand backup" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand backup" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand backup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand restore" -l cluster-secret -d 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]' -r
complete -c ydht -n "__fish_ydht_using_subcommand restore" -l data-dir -d 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand restore" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand restore" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand restore" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand restore" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand restore" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand man" -l dir -d 'Write `ydht.1` and one page per subcommand (`ydht-kv-put.1`, …) into this directory instead of printing `ydht.1`' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand man" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand man" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l op -d 'Operation to measure' -r -f -a "put\t'Writes of random keys'
get\t'Reads of random keys (created before the run)'
mixed\t'Half reads, half writes, of random keys (created before the run)'
cas\t'Conditional writes (If-Match on the version each client last saw; a 412 teaches it the current one) of random keys (created before the run); `--keys 1` makes them contend'"
complete -c ydht -n "__fish_ydht_using_subcommand bench" -s c -l clients -d 'Concurrent clients (one keep-alive connection and one request in flight each)' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l duration -d 'Measure for this long (`30s`, `2m`); the default unless --requests is given' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -s n -l requests -d 'Measure exactly this many requests instead of a duration' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l value-size -d 'Value size in bytes' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l keys -d 'Number of distinct keys (`bench/<random>/0` …)' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l consistency -d 'Consistency level of gateway requests (`X-Consistency`)' -r -f -a "eventual\t'Acknowledged once the primary owner has it'
strong\t'Acknowledged once a quorum of owners has it'"
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l ttl -d 'Time to live of the written keys (`10m`), so they expire after the run' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l warmup -d 'Warm-up before measuring (not counted); `0s` skips it' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l timeout -d 'Per-request timeout' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l target-node -d 'Measure one storage node\'s internal /store directly (one hop) instead of the gateway' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l cluster-secret -d 'Cluster secret for --target-node (the data dir\'s cluster.secret)' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l target-etcd -d 'Measure etcd\'s v3 HTTP/JSON gateway at this URL (for bench/compare.sh)' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l batch -d 'Send the puts N to a request, as one `POST /v1/batch` (gateway, --op put); every key counts as an operation, with its batch\'s latency (--requests counts batch requests)' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l watchers -d 'Measure change streams instead: open N watches (GET /v1/watch) on the run\'s prefix while --clients writers put keys under it at --rate writes/s for --duration; report the delay from each write\'s 200 to its event, and events lost or repeated' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l rate -d 'Writes per second, all writers together, with --watchers' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l server-pid -d 'Also report the CPU time (user + system) these server processes spent per measured operation, from /proc (repeat for several processes; Linux only)' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l gateway -d 'Gateway base URL [default: config.json\'s gateway_url, else http://127.0.0.1:8080]' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l api-key -d 'API key [default: the one stored by `apikey create --use`]' -r
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l config-dir -d 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l output -d 'Output format' -r -f -a "table\t'Human-readable tables and sentences'
json\t'One machine-readable JSON document on stdout'"
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l ca-file -d 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)' -r -F
complete -c ydht -n "__fish_ydht_using_subcommand bench" -l keep -d 'Keep the keys the run wrote (`bench/<random>/…`) instead of deleting them afterwards'
complete -c ydht -n "__fish_ydht_using_subcommand bench" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "serve" -d 'Run a server (one service of the cluster)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "completions" -d 'Print shell completions (or write every shell\'s file with --dir)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "top" -d 'Live dashboard of the cluster: ring, replication, gateway traffic, history, events'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "signup" -d 'Create an account and log in'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "login" -d 'Log in; tokens are kept in the config dir (mode 0600) and refreshed automatically'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "logout" -d 'Revoke the login session and forget its tokens'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "whoami" -d 'Show who is logged in'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "apikey" -d 'Manage your API keys'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "kv" -d 'Store, read, delete, count, list and locate your keys (uses an API key)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "cluster" -d 'Change the cluster online: join or remove storage nodes, watch the data move'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "status" -d 'Health and metrics of every service, as one table; exit 4 if any is down'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "backup" -d 'Copy every live record of the cluster (or of one tenant) into a compressed, checksummed file'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "restore" -d 'Write a backup file\'s records back into the running cluster (newer data already there stays)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "man" -d 'Print the manual page (or write one per command with --dir)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "bench" -d 'Load generator: throughput and latency percentiles of puts/gets (gateway, or one node with --target-node)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and not __fish_seen_subcommand_from serve completions top signup login logout whoami apikey kv cluster status backup restore man bench help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "all" -d 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "node" -d 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "replicator" -d 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "users" -d 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from serve" -f -a "gateway" -d 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from apikey" -f -a "create" -d 'Create an API key (its full value is shown once)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from apikey" -f -a "list" -d 'List your API keys (never their full value)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from apikey" -f -a "revoke" -d 'Revoke an API key by id; it stops working at the gateway within seconds'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from kv" -f -a "put" -d 'Store a value: from VALUE, --file, or stdin (binary-safe)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from kv" -f -a "get" -d 'Print a value\'s raw bytes (or write them to -o FILE); exit 1 if the key does not exist'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from kv" -f -a "delete" -d 'Delete a key; exit 1 if it does not exist'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from kv" -f -a "incr" -d 'Add to an integer counter (decimal text) with compare-and-set; a missing key counts from 0'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from kv" -f -a "list" -d 'List your keys'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from kv" -f -a "locate" -d 'Show a key\'s primary and replicas and the version each holds (needs the cluster secret)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from kv" -f -a "import" -d 'Load keys from a JSON-lines file (key, value or value_base64, content_type, ttl), in batches'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from kv" -f -a "export" -d 'Write every key (or those under --prefix) as JSON lines, with its TTL left, to stdout'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from kv" -f -a "watch" -d 'Print changes (put, delete, expire) as they happen until Ctrl-C; reconnects and resumes by itself'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from cluster" -f -a "join" -d 'Add a storage node to the ring; its share of the keys moves to it while the cluster keeps serving (the node must run with --join, which registers it by itself)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from cluster" -f -a "leave" -d 'Remove a storage node; its keys move to the others before it goes (--force: it is dead, rebuild from the copies)'
complete -c ydht -n "__fish_ydht_using_subcommand help; and __fish_seen_subcommand_from cluster" -f -a "status" -d 'The members, their states (joining, active, leaving, down) and the progress of a change'
