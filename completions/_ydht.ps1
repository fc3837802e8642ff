
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'ydht' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'ydht'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'ydht' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'gateway')
            [CompletionResult]::new('--users', '--users', [CompletionResultType]::ParameterName, 'users')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'api-key')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'config-dir')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run a server (one service of the cluster)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print shell completions (or write every shell''s file with --dir)')
            [CompletionResult]::new('top', 'top', [CompletionResultType]::ParameterValue, 'Live dashboard of the cluster: ring, replication, gateway traffic, history, events')
            [CompletionResult]::new('signup', 'signup', [CompletionResultType]::ParameterValue, 'Create an account and log in')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Log in; tokens are kept in the config dir (mode 0600) and refreshed automatically')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Revoke the login session and forget its tokens')
            [CompletionResult]::new('whoami', 'whoami', [CompletionResultType]::ParameterValue, 'Show who is logged in')
            [CompletionResult]::new('apikey', 'apikey', [CompletionResultType]::ParameterValue, 'Manage your API keys')
            [CompletionResult]::new('kv', 'kv', [CompletionResultType]::ParameterValue, 'Store, read, delete, count, list and locate your keys (uses an API key)')
            [CompletionResult]::new('cluster', 'cluster', [CompletionResultType]::ParameterValue, 'Change the cluster online: join or remove storage nodes, watch the data move')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Health and metrics of every service, as one table; exit 4 if any is down')
            [CompletionResult]::new('backup', 'backup', [CompletionResultType]::ParameterValue, 'Copy every live record of the cluster (or of one tenant) into a compressed, checksummed file')
            [CompletionResult]::new('restore', 'restore', [CompletionResultType]::ParameterValue, 'Write a backup file''s records back into the running cluster (newer data already there stays)')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Print the manual page (or write one per command with --dir)')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Load generator: throughput and latency percentiles of puts/gets (gateway, or one node with --target-node)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;serve' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('all', 'all', [CompletionResultType]::ParameterValue, 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)')
            [CompletionResult]::new('node', 'node', [CompletionResultType]::ParameterValue, 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)')
            [CompletionResult]::new('replicator', 'replicator', [CompletionResultType]::ParameterValue, 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)')
            [CompletionResult]::new('users', 'users', [CompletionResultType]::ParameterValue, 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)')
            [CompletionResult]::new('gateway', 'gateway', [CompletionResultType]::ParameterValue, 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;serve;all' {
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to bind; use 0.0.0.0 to accept connections from other machines')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'Shared secret guarding internal endpoints [default: generated once into the data dir]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'PEM private key of --tls-cert')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log lines as text, or as one JSON object per line (for log collectors)')
            [CompletionResult]::new('--nodes', '--nodes', [CompletionResultType]::ParameterName, 'Number of storage nodes (node-1, node-2, …)')
            [CompletionResult]::new('--gateway-port', '--gateway-port', [CompletionResultType]::ParameterName, 'Gateway port (0 picks a free one)')
            [CompletionResult]::new('--users-port', '--users-port', [CompletionResultType]::ParameterName, 'Users service port (0 picks a free one)')
            [CompletionResult]::new('--node-port', '--node-port', [CompletionResultType]::ParameterName, 'Port of node-1; the others take the next free numbers (0: every node picks a free one)')
            [CompletionResult]::new('--replicator-port', '--replicator-port', [CompletionResultType]::ParameterName, 'Replicator port (0 picks a free one)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;serve;node' {
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port to listen on')
            [CompletionResult]::new('--node-id', '--node-id', [CompletionResultType]::ParameterName, 'This node''s id; its WAL and snapshots live in <data-dir>/<node-id>/')
            [CompletionResult]::new('--max-value-bytes', '--max-value-bytes', [CompletionResultType]::ParameterName, 'Largest value accepted, in bytes (larger bodies get 413 before being read)')
            [CompletionResult]::new('--wal-max-bytes', '--wal-max-bytes', [CompletionResultType]::ParameterName, 'Snapshot and start a new WAL segment when the active one reaches this many bytes')
            [CompletionResult]::new('--sync-mode', '--sync-mode', [CompletionResultType]::ParameterName, 'group: concurrent writes share one fdatasync; per-write: one fdatasync per write (for benchmarks)')
            [CompletionResult]::new('--feed-retention', '--feed-retention', [CompletionResultType]::ParameterName, 'How long the change feed (`GET /feed`, for watches) keeps changes: WAL segments a snapshot covers are removed only once they were last written this long ago (0: at once)')
            [CompletionResult]::new('--feed-retention-changes', '--feed-retention-changes', [CompletionResultType]::ParameterName, 'How many changes the change feed keeps at least: a WAL segment a snapshot covers is also kept until this many WAL entries were logged after it (0: no minimum)')
            [CompletionResult]::new('--tombstone-grace', '--tombstone-grace', [CompletionResultType]::ParameterName, 'How long tombstones and expired entries keep their version before being purged; with peers, a tombstone is purged only once every peer is also known to hold it (a peer that is down holds them back)')
            [CompletionResult]::new('--peers', '--peers', [CompletionResultType]::ParameterName, 'Every storage node of the cluster, this one included (id=url,… or bare URLs, the gateway''s format; a bare URL is this node when it is its --advertise-url or the host:port it listens on); enables anti-entropy with the others')
            [CompletionResult]::new('--replicas', '--replicas', [CompletionResultType]::ParameterName, 'Copies kept of every key (must match the gateway''s; decides which keys this node shares with each peer)')
            [CompletionResult]::new('--vnodes', '--vnodes', [CompletionResultType]::ParameterName, 'Virtual nodes per physical node on the ring (must match the gateway''s)')
            [CompletionResult]::new('--anti-entropy-interval', '--anti-entropy-interval', [CompletionResultType]::ParameterName, 'Time between anti-entropy rounds with the peers; 0 disables anti-entropy')
            [CompletionResult]::new('--anti-entropy-max-keys', '--anti-entropy-max-keys', [CompletionResultType]::ParameterName, 'Most records one anti-entropy round transfers (pulled + pushed), so repairs never starve client traffic')
            [CompletionResult]::new('--join', '--join', [CompletionResultType]::ParameterName, 'Register this node at start through the gateway at this URL and follow the cluster membership: online joins and removals, rebalancing, anti-entropy with every member')
            [CompletionResult]::new('--advertise-url', '--advertise-url', [CompletionResultType]::ParameterName, 'The URL other services reach this node at [default: http(s)://HOST:PORT it bound]')
            [CompletionResult]::new('--rebalance-rate', '--rebalance-rate', [CompletionResultType]::ParameterName, 'Most records per second this node pulls while rebalancing after a membership change')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to bind; use 0.0.0.0 to accept connections from other machines')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'Shared secret guarding internal endpoints [default: generated once into the data dir]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'PEM private key of --tls-cert')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log lines as text, or as one JSON object per line (for log collectors)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--salvage-wal', '--salvage-wal', [CompletionResultType]::ParameterName, 'Start despite a corrupt WAL segment by truncating it at the first bad record (later records are lost)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;serve;replicator' {
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to bind; use 0.0.0.0 to accept connections from other machines')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'Shared secret guarding internal endpoints [default: generated once into the data dir]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'PEM private key of --tls-cert')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log lines as text, or as one JSON object per line (for log collectors)')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port to listen on (0 picks a free one)')
            [CompletionResult]::new('--max-queue', '--max-queue', [CompletionResultType]::ParameterName, 'Most unfinished jobs kept; beyond it new jobs get 503 with Retry-After')
            [CompletionResult]::new('--max-queue-bytes', '--max-queue-bytes', [CompletionResultType]::ParameterName, 'Most bytes of values held by unfinished jobs; beyond it new jobs get 503')
            [CompletionResult]::new('--max-value-bytes', '--max-value-bytes', [CompletionResultType]::ParameterName, 'Largest value a job may carry, in bytes; larger bodies get 413')
            [CompletionResult]::new('--wait-timeout', '--wait-timeout', [CompletionResultType]::ParameterName, 'With `x-ydht-wait`, how long to wait for the acknowledgements before answering 504')
            [CompletionResult]::new('--retry-base', '--retry-base', [CompletionResultType]::ParameterName, 'Delay before the first retry of a failed replica write (doubles each retry, plus jitter)')
            [CompletionResult]::new('--probe-interval', '--probe-interval', [CompletionResultType]::ParameterName, 'How often nodes holding hinted handoffs are probed with /health')
            [CompletionResult]::new('--request-timeout', '--request-timeout', [CompletionResultType]::ParameterName, 'Timeout of one request to a node')
            [CompletionResult]::new('--compact-bytes', '--compact-bytes', [CompletionResultType]::ParameterName, 'Rewrite the queue log when it grows past this many bytes (mostly finished work)')
            [CompletionResult]::new('--users-url', '--users-url', [CompletionResultType]::ParameterName, 'Follow the cluster membership at this users service: copies for a node that left the cluster (`ydht cluster leave`, also `--force`) go to the key''s current owners instead')
            [CompletionResult]::new('--replicas', '--replicas', [CompletionResultType]::ParameterName, 'Copies kept of every key (N), as the gateway''s (to find a key''s owners)')
            [CompletionResult]::new('--vnodes', '--vnodes', [CompletionResultType]::ParameterName, 'Virtual nodes per storage node on the ring, as the gateway''s')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;serve;users' {
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to bind; use 0.0.0.0 to accept connections from other machines')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'Shared secret guarding internal endpoints [default: generated once into the data dir]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'PEM private key of --tls-cert')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log lines as text, or as one JSON object per line (for log collectors)')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port to listen on')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'Database: postgres://user:pass@host:5432/db or sqlite:///path/users.db [default: <data-dir>/users.db]')
            [CompletionResult]::new('--jwt-secret', '--jwt-secret', [CompletionResultType]::ParameterName, 'Secret signing access tokens (HS256) [default: generated once into <data-dir>/jwt.secret]')
            [CompletionResult]::new('--jwt-expiration', '--jwt-expiration', [CompletionResultType]::ParameterName, 'Access-token lifetime, e.g. 15m, 1h, 24h')
            [CompletionResult]::new('--gateway-url', '--gateway-url', [CompletionResultType]::ParameterName, 'Base URL of the gateway, for the dashboard''s key browser')
            [CompletionResult]::new('--signups-per-hour', '--signups-per-hour', [CompletionResultType]::ParameterName, 'Sign-ups allowed per client address (IPv6: per /64) and hour; 0 = no limit')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--secure-cookies', '--secure-cookies', [CompletionResultType]::ParameterName, 'Mark cookies `Secure` (set when the pages are served over HTTPS)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;serve;gateway' {
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to bind; use 0.0.0.0 to accept connections from other machines')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'Shared secret guarding internal endpoints [default: generated once into the data dir]')
            [CompletionResult]::new('--tls-cert', '--tls-cert', [CompletionResultType]::ParameterName, 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)')
            [CompletionResult]::new('--tls-key', '--tls-key', [CompletionResultType]::ParameterName, 'PEM private key of --tls-cert')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log lines as text, or as one JSON object per line (for log collectors)')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port to listen on (0 picks a free one)')
            [CompletionResult]::new('--nodes', '--nodes', [CompletionResultType]::ParameterName, 'Storage nodes: comma-separated `id=http://host:port` (or bare URLs)')
            [CompletionResult]::new('--replicator-url', '--replicator-url', [CompletionResultType]::ParameterName, 'Base URL of the replicator')
            [CompletionResult]::new('--users-url', '--users-url', [CompletionResultType]::ParameterName, 'Base URL of the users service (API-key validation, usage)')
            [CompletionResult]::new('--replicas', '--replicas', [CompletionResultType]::ParameterName, 'Copies kept of every key (N)')
            [CompletionResult]::new('--vnodes', '--vnodes', [CompletionResultType]::ParameterName, 'Virtual nodes per storage node on the ring')
            [CompletionResult]::new('--rate-limit-per-minute', '--rate-limit-per-minute', [CompletionResultType]::ParameterName, 'Requests per minute each user''s bucket refills (0 disables rate limiting)')
            [CompletionResult]::new('--rate-limit-burst', '--rate-limit-burst', [CompletionResultType]::ParameterName, 'Requests a user may make in a burst')
            [CompletionResult]::new('--max-value-bytes', '--max-value-bytes', [CompletionResultType]::ParameterName, 'Largest value accepted, in bytes (larger → 413)')
            [CompletionResult]::new('--auth-failures-per-minute', '--auth-failures-per-minute', [CompletionResultType]::ParameterName, 'Failed API-key checks allowed per client address and minute before 429 (0 disables)')
            [CompletionResult]::new('--max-clock-offset', '--max-clock-offset', [CompletionResultType]::ParameterName, 'Largest offset between this gateway''s clock and the storage nodes'' (median) it writes with; past it writes get 503 until the clocks agree again (`500ms`, `2s`)')
            [CompletionResult]::new('--max-watches-per-tenant', '--max-watches-per-tenant', [CompletionResultType]::ParameterName, 'Most watches (`GET /v1/watch`) one account may have open on this gateway (429 past it)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;serve;help' {
            [CompletionResult]::new('all', 'all', [CompletionResultType]::ParameterValue, 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)')
            [CompletionResult]::new('node', 'node', [CompletionResultType]::ParameterValue, 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)')
            [CompletionResult]::new('replicator', 'replicator', [CompletionResultType]::ParameterValue, 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)')
            [CompletionResult]::new('users', 'users', [CompletionResultType]::ParameterValue, 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)')
            [CompletionResult]::new('gateway', 'gateway', [CompletionResultType]::ParameterValue, 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;serve;help;all' {
            break
        }
        'ydht;serve;help;node' {
            break
        }
        'ydht;serve;help;replicator' {
            break
        }
        'ydht;serve;help;users' {
            break
        }
        'ydht;serve;help;gateway' {
            break
        }
        'ydht;serve;help;help' {
            break
        }
        'ydht;completions' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'Write the files for every shell into this directory instead of printing')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;top' {
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'How often to poll the services, e.g. 500ms, 1s, 5s')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;signup' {
            [CompletionResult]::new('--email', '--email', [CompletionResultType]::ParameterName, 'Account email')
            [CompletionResult]::new('--username', '--username', [CompletionResultType]::ParameterName, 'Account name: 3–32 letters, digits, `_` or `-`')
            [CompletionResult]::new('--users', '--users', [CompletionResultType]::ParameterName, 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--password-stdin', '--password-stdin', [CompletionResultType]::ParameterName, 'Read the password from stdin instead of prompting (for scripts)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;login' {
            [CompletionResult]::new('--email', '--email', [CompletionResultType]::ParameterName, 'Account email')
            [CompletionResult]::new('--users', '--users', [CompletionResultType]::ParameterName, 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--password-stdin', '--password-stdin', [CompletionResultType]::ParameterName, 'Read the password from stdin instead of prompting (for scripts)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;logout' {
            [CompletionResult]::new('--users', '--users', [CompletionResultType]::ParameterName, 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--all', '--all', [CompletionResultType]::ParameterName, 'Also forget the default API key stored by `apikey create --use`')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;whoami' {
            [CompletionResult]::new('--users', '--users', [CompletionResultType]::ParameterName, 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;apikey' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an API key (its full value is shown once)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your API keys (never their full value)')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke an API key by id; it stops working at the gateway within seconds')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;apikey;create' {
            [CompletionResult]::new('--name', '--name', [CompletionResultType]::ParameterName, 'A name to recognise the key by')
            [CompletionResult]::new('--scopes', '--scopes', [CompletionResultType]::ParameterName, 'Comma-separated scopes')
            [CompletionResult]::new('--expires-in-days', '--expires-in-days', [CompletionResultType]::ParameterName, 'Days until the key expires, 1–3650 [default: never]')
            [CompletionResult]::new('--users', '--users', [CompletionResultType]::ParameterName, 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--use', '--use', [CompletionResultType]::ParameterName, 'Store the key as the default for `ydht kv` (in credentials.json, mode 0600)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;apikey;list' {
            [CompletionResult]::new('--users', '--users', [CompletionResultType]::ParameterName, 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;apikey;revoke' {
            [CompletionResult]::new('--users', '--users', [CompletionResultType]::ParameterName, 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;apikey;help' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an API key (its full value is shown once)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your API keys (never their full value)')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke an API key by id; it stops working at the gateway within seconds')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;apikey;help;create' {
            break
        }
        'ydht;apikey;help;list' {
            break
        }
        'ydht;apikey;help;revoke' {
            break
        }
        'ydht;apikey;help;help' {
            break
        }
        'ydht;kv' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('put', 'put', [CompletionResultType]::ParameterValue, 'Store a value: from VALUE, --file, or stdin (binary-safe)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a value''s raw bytes (or write them to -o FILE); exit 1 if the key does not exist')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a key; exit 1 if it does not exist')
            [CompletionResult]::new('incr', 'incr', [CompletionResultType]::ParameterValue, 'Add to an integer counter (decimal text) with compare-and-set; a missing key counts from 0')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your keys')
            [CompletionResult]::new('locate', 'locate', [CompletionResultType]::ParameterValue, 'Show a key''s primary and replicas and the version each holds (needs the cluster secret)')
            [CompletionResult]::new('import', 'import', [CompletionResultType]::ParameterValue, 'Load keys from a JSON-lines file (key, value or value_base64, content_type, ttl), in batches')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write every key (or those under --prefix) as JSON lines, with its TTL left, to stdout')
            [CompletionResult]::new('watch', 'watch', [CompletionResultType]::ParameterValue, 'Print changes (put, delete, expire) as they happen until Ctrl-C; reconnects and resumes by itself')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;kv;put' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Read the value from this file')
            [CompletionResult]::new('--file', '--file', [CompletionResultType]::ParameterName, 'Read the value from this file')
            [CompletionResult]::new('--ttl', '--ttl', [CompletionResultType]::ParameterName, 'Expire the key after this long: 30s, 30m, 1h, 24h, 1h30m')
            [CompletionResult]::new('--consistency', '--consistency', [CompletionResultType]::ParameterName, 'Consistency level of the write [default: eventual]')
            [CompletionResult]::new('--content-type', '--content-type', [CompletionResultType]::ParameterName, 'Content type stored with the value [default: application/octet-stream]')
            [CompletionResult]::new('--if-version', '--if-version', [CompletionResultType]::ParameterName, 'Write only if the key is at this version (as `kv get --show-version` prints it); else exit 5')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the one stored by `apikey create --use`]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--if-absent', '--if-absent', [CompletionResultType]::ParameterName, 'Write only if the key does not exist (absent, deleted or expired); else exit 5')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;kv;get' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the value to this file instead of stdout')
            [CompletionResult]::new('--output-file', '--output-file', [CompletionResultType]::ParameterName, 'Write the value to this file instead of stdout')
            [CompletionResult]::new('--consistency', '--consistency', [CompletionResultType]::ParameterName, 'Consistency level of the read [default: eventual]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the one stored by `apikey create --use`]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--show-version', '--show-version', [CompletionResultType]::ParameterName, 'Also print the value''s version (`version: V` after the value), for --if-version')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;kv;delete' {
            [CompletionResult]::new('--consistency', '--consistency', [CompletionResultType]::ParameterName, 'Consistency level of the delete [default: eventual]')
            [CompletionResult]::new('--if-version', '--if-version', [CompletionResultType]::ParameterName, 'Delete only if the key is at this version; else exit 5')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the one stored by `apikey create --use`]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;kv;incr' {
            [CompletionResult]::new('--by', '--by', [CompletionResultType]::ParameterName, 'How much to add (negative to subtract)')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the one stored by `apikey create --use`]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;kv;list' {
            [CompletionResult]::new('--prefix', '--prefix', [CompletionResultType]::ParameterName, 'Only keys starting with this prefix')
            [CompletionResult]::new('--limit', '--limit', [CompletionResultType]::ParameterName, 'Show at most this many keys [default: all]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the one stored by `apikey create --use`]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;kv;locate' {
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--users', '--users', [CompletionResultType]::ParameterName, 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the one stored by `apikey create --use`]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;kv;import' {
            [CompletionResult]::new('--consistency', '--consistency', [CompletionResultType]::ParameterName, 'Consistency level of the writes [default: eventual]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the one stored by `apikey create --use`]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;kv;export' {
            [CompletionResult]::new('--prefix', '--prefix', [CompletionResultType]::ParameterName, 'Only keys starting with this prefix')
            [CompletionResult]::new('--consistency', '--consistency', [CompletionResultType]::ParameterName, 'Consistency level of the reads [default: eventual]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the one stored by `apikey create --use`]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;kv;watch' {
            [CompletionResult]::new('--prefix', '--prefix', [CompletionResultType]::ParameterName, 'Watch the keys starting with this prefix (default: every key)')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'Start after this cursor (an event''s id, printed with --output json) instead of now')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the one stored by `apikey create --use`]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--values', '--values', [CompletionResultType]::ParameterName, 'Include each put''s value in the output')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;kv;help' {
            [CompletionResult]::new('put', 'put', [CompletionResultType]::ParameterValue, 'Store a value: from VALUE, --file, or stdin (binary-safe)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a value''s raw bytes (or write them to -o FILE); exit 1 if the key does not exist')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a key; exit 1 if it does not exist')
            [CompletionResult]::new('incr', 'incr', [CompletionResultType]::ParameterValue, 'Add to an integer counter (decimal text) with compare-and-set; a missing key counts from 0')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your keys')
            [CompletionResult]::new('locate', 'locate', [CompletionResultType]::ParameterValue, 'Show a key''s primary and replicas and the version each holds (needs the cluster secret)')
            [CompletionResult]::new('import', 'import', [CompletionResultType]::ParameterValue, 'Load keys from a JSON-lines file (key, value or value_base64, content_type, ttl), in batches')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write every key (or those under --prefix) as JSON lines, with its TTL left, to stdout')
            [CompletionResult]::new('watch', 'watch', [CompletionResultType]::ParameterValue, 'Print changes (put, delete, expire) as they happen until Ctrl-C; reconnects and resumes by itself')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;kv;help;put' {
            break
        }
        'ydht;kv;help;get' {
            break
        }
        'ydht;kv;help;delete' {
            break
        }
        'ydht;kv;help;incr' {
            break
        }
        'ydht;kv;help;list' {
            break
        }
        'ydht;kv;help;locate' {
            break
        }
        'ydht;kv;help;import' {
            break
        }
        'ydht;kv;help;export' {
            break
        }
        'ydht;kv;help;watch' {
            break
        }
        'ydht;kv;help;help' {
            break
        }
        'ydht;cluster' {
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('join', 'join', [CompletionResultType]::ParameterValue, 'Add a storage node to the ring; its share of the keys moves to it while the cluster keeps serving (the node must run with --join, which registers it by itself)')
            [CompletionResult]::new('leave', 'leave', [CompletionResultType]::ParameterValue, 'Remove a storage node; its keys move to the others before it goes (--force: it is dead, rebuild from the copies)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'The members, their states (joining, active, leaving, down) and the progress of a change')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;cluster;join' {
            [CompletionResult]::new('--id', '--id', [CompletionResultType]::ParameterName, 'The node''s id [default: asked from the node''s /health]')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--no-wait', '--no-wait', [CompletionResultType]::ParameterName, 'Return once the change is recorded, without waiting for the data to move')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;cluster;leave' {
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'The node is gone for good: rebuild its keys from the other copies instead of from it')
            [CompletionResult]::new('--no-wait', '--no-wait', [CompletionResultType]::ParameterName, 'Return once the change is recorded, without waiting for the data to move')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;cluster;status' {
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;cluster;help' {
            [CompletionResult]::new('join', 'join', [CompletionResultType]::ParameterValue, 'Add a storage node to the ring; its share of the keys moves to it while the cluster keeps serving (the node must run with --join, which registers it by itself)')
            [CompletionResult]::new('leave', 'leave', [CompletionResultType]::ParameterValue, 'Remove a storage node; its keys move to the others before it goes (--force: it is dead, rebuild from the copies)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'The members, their states (joining, active, leaving, down) and the progress of a change')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;cluster;help;join' {
            break
        }
        'ydht;cluster;help;leave' {
            break
        }
        'ydht;cluster;help;status' {
            break
        }
        'ydht;cluster;help;help' {
            break
        }
        'ydht;status' {
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--users', '--users', [CompletionResultType]::ParameterName, 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;backup' {
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Write the backup to this file (replaced if it exists; written to FILE.partial first)')
            [CompletionResult]::new('--tenant', '--tenant', [CompletionResultType]::ParameterName, 'Only this tenant''s keys (its user id, as `ydht whoami` shows it)')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;restore' {
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;man' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'Write `ydht.1` and one page per subcommand (`ydht-kv-put.1`, …) into this directory instead of printing `ydht.1`')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;bench' {
            [CompletionResult]::new('--op', '--op', [CompletionResultType]::ParameterName, 'Operation to measure')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Concurrent clients (one keep-alive connection and one request in flight each)')
            [CompletionResult]::new('--clients', '--clients', [CompletionResultType]::ParameterName, 'Concurrent clients (one keep-alive connection and one request in flight each)')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Measure for this long (`30s`, `2m`); the default unless --requests is given')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Measure exactly this many requests instead of a duration')
            [CompletionResult]::new('--requests', '--requests', [CompletionResultType]::ParameterName, 'Measure exactly this many requests instead of a duration')
            [CompletionResult]::new('--value-size', '--value-size', [CompletionResultType]::ParameterName, 'Value size in bytes')
            [CompletionResult]::new('--keys', '--keys', [CompletionResultType]::ParameterName, 'Number of distinct keys (`bench/<random>/0` …)')
            [CompletionResult]::new('--consistency', '--consistency', [CompletionResultType]::ParameterName, 'Consistency level of gateway requests (`X-Consistency`)')
            [CompletionResult]::new('--ttl', '--ttl', [CompletionResultType]::ParameterName, 'Time to live of the written keys (`10m`), so they expire after the run')
            [CompletionResult]::new('--warmup', '--warmup', [CompletionResultType]::ParameterName, 'Warm-up before measuring (not counted); `0s` skips it')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Per-request timeout')
            [CompletionResult]::new('--target-node', '--target-node', [CompletionResultType]::ParameterName, 'Measure one storage node''s internal /store directly (one hop) instead of the gateway')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'Cluster secret for --target-node (the data dir''s cluster.secret)')
            [CompletionResult]::new('--target-etcd', '--target-etcd', [CompletionResultType]::ParameterName, 'Measure etcd''s v3 HTTP/JSON gateway at this URL (for bench/compare.sh)')
            [CompletionResult]::new('--batch', '--batch', [CompletionResultType]::ParameterName, 'Send the puts N to a request, as one `POST /v1/batch` (gateway, --op put); every key counts as an operation, with its batch''s latency (--requests counts batch requests)')
            [CompletionResult]::new('--watchers', '--watchers', [CompletionResultType]::ParameterName, 'Measure change streams instead: open N watches (GET /v1/watch) on the run''s prefix while --clients writers put keys under it at --rate writes/s for --duration; report the delay from each write''s 200 to its event, and events lost or repeated')
            [CompletionResult]::new('--rate', '--rate', [CompletionResultType]::ParameterName, 'Writes per second, all writers together, with --watchers')
            [CompletionResult]::new('--server-pid', '--server-pid', [CompletionResultType]::ParameterName, 'Also report the CPU time (user + system) these server processes spent per measured operation, from /proc (repeat for several processes; Linux only)')
            [CompletionResult]::new('--gateway', '--gateway', [CompletionResultType]::ParameterName, 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]')
            [CompletionResult]::new('--api-key', '--api-key', [CompletionResultType]::ParameterName, 'API key [default: the one stored by `apikey create --use`]')
            [CompletionResult]::new('--config-dir', '--config-dir', [CompletionResultType]::ParameterName, 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--ca-file', '--ca-file', [CompletionResultType]::ParameterName, 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)')
            [CompletionResult]::new('--keep', '--keep', [CompletionResultType]::ParameterName, 'Keep the keys the run wrote (`bench/<random>/…`) instead of deleting them afterwards')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run a server (one service of the cluster)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print shell completions (or write every shell''s file with --dir)')
            [CompletionResult]::new('top', 'top', [CompletionResultType]::ParameterValue, 'Live dashboard of the cluster: ring, replication, gateway traffic, history, events')
            [CompletionResult]::new('signup', 'signup', [CompletionResultType]::ParameterValue, 'Create an account and log in')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Log in; tokens are kept in the config dir (mode 0600) and refreshed automatically')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Revoke the login session and forget its tokens')
            [CompletionResult]::new('whoami', 'whoami', [CompletionResultType]::ParameterValue, 'Show who is logged in')
            [CompletionResult]::new('apikey', 'apikey', [CompletionResultType]::ParameterValue, 'Manage your API keys')
            [CompletionResult]::new('kv', 'kv', [CompletionResultType]::ParameterValue, 'Store, read, delete, count, list and locate your keys (uses an API key)')
            [CompletionResult]::new('cluster', 'cluster', [CompletionResultType]::ParameterValue, 'Change the cluster online: join or remove storage nodes, watch the data move')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Health and metrics of every service, as one table; exit 4 if any is down')
            [CompletionResult]::new('backup', 'backup', [CompletionResultType]::ParameterValue, 'Copy every live record of the cluster (or of one tenant) into a compressed, checksummed file')
            [CompletionResult]::new('restore', 'restore', [CompletionResultType]::ParameterValue, 'Write a backup file''s records back into the running cluster (newer data already there stays)')
            [CompletionResult]::new('man', 'man', [CompletionResultType]::ParameterValue, 'Print the manual page (or write one per command with --dir)')
            [CompletionResult]::new('bench', 'bench', [CompletionResultType]::ParameterValue, 'Load generator: throughput and latency percentiles of puts/gets (gateway, or one node with --target-node)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;help;serve' {
            [CompletionResult]::new('all', 'all', [CompletionResultType]::ParameterValue, 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)')
            [CompletionResult]::new('node', 'node', [CompletionResultType]::ParameterValue, 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)')
            [CompletionResult]::new('replicator', 'replicator', [CompletionResultType]::ParameterValue, 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)')
            [CompletionResult]::new('users', 'users', [CompletionResultType]::ParameterValue, 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)')
            [CompletionResult]::new('gateway', 'gateway', [CompletionResultType]::ParameterValue, 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency')
            break
        }
        'ydht;help;serve;all' {
            break
        }
        'ydht;help;serve;node' {
            break
        }
        'ydht;help;serve;replicator' {
            break
        }
        'ydht;help;serve;users' {
            break
        }
        'ydht;help;serve;gateway' {
            break
        }
        'ydht;help;completions' {
            break
        }
        'ydht;help;top' {
            break
        }
        'ydht;help;signup' {
            break
        }
        'ydht;help;login' {
            break
        }
        'ydht;help;logout' {
            break
        }
        'ydht;help;whoami' {
            break
        }
        'ydht;help;apikey' {
            [CompletionResult]::new('create', 'create', [CompletionResultType]::ParameterValue, 'Create an API key (its full value is shown once)')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your API keys (never their full value)')
            [CompletionResult]::new('revoke', 'revoke', [CompletionResultType]::ParameterValue, 'Revoke an API key by id; it stops working at the gateway within seconds')
            break
        }
        'ydht;help;apikey;create' {
            break
        }
        'ydht;help;apikey;list' {
            break
        }
        'ydht;help;apikey;revoke' {
            break
        }
        'ydht;help;kv' {
            [CompletionResult]::new('put', 'put', [CompletionResultType]::ParameterValue, 'Store a value: from VALUE, --file, or stdin (binary-safe)')
            [CompletionResult]::new('get', 'get', [CompletionResultType]::ParameterValue, 'Print a value''s raw bytes (or write them to -o FILE); exit 1 if the key does not exist')
            [CompletionResult]::new('delete', 'delete', [CompletionResultType]::ParameterValue, 'Delete a key; exit 1 if it does not exist')
            [CompletionResult]::new('incr', 'incr', [CompletionResultType]::ParameterValue, 'Add to an integer counter (decimal text) with compare-and-set; a missing key counts from 0')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List your keys')
            [CompletionResult]::new('locate', 'locate', [CompletionResultType]::ParameterValue, 'Show a key''s primary and replicas and the version each holds (needs the cluster secret)')
            [CompletionResult]::new('import', 'import', [CompletionResultType]::ParameterValue, 'Load keys from a JSON-lines file (key, value or value_base64, content_type, ttl), in batches')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Write every key (or those under --prefix) as JSON lines, with its TTL left, to stdout')
            [CompletionResult]::new('watch', 'watch', [CompletionResultType]::ParameterValue, 'Print changes (put, delete, expire) as they happen until Ctrl-C; reconnects and resumes by itself')
            break
        }
        'ydht;help;kv;put' {
            break
        }
        'ydht;help;kv;get' {
            break
        }
        'ydht;help;kv;delete' {
            break
        }
        'ydht;help;kv;incr' {
            break
        }
        'ydht;help;kv;list' {
            break
        }
        'ydht;help;kv;locate' {
            break
        }
        'ydht;help;kv;import' {
            break
        }
        'ydht;help;kv;export' {
            break
        }
        'ydht;help;kv;watch' {
            break
        }
        'ydht;help;cluster' {
            [CompletionResult]::new('join', 'join', [CompletionResultType]::ParameterValue, 'Add a storage node to the ring; its share of the keys moves to it while the cluster keeps serving (the node must run with --join, which registers it by itself)')
            [CompletionResult]::new('leave', 'leave', [CompletionResultType]::ParameterValue, 'Remove a storage node; its keys move to the others before it goes (--force: it is dead, rebuild from the copies)')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'The members, their states (joining, active, leaving, down) and the progress of a change')
            break
        }
        'ydht;help;cluster;join' {
            break
        }
        'ydht;help;cluster;leave' {
            break
        }
        'ydht;help;cluster;status' {
            break
        }
        'ydht;help;status' {
            break
        }
        'ydht;help;backup' {
            break
        }
        'ydht;help;restore' {
            break
        }
        'ydht;help;man' {
            break
        }
        'ydht;help;bench' {
            break
        }
        'ydht;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
