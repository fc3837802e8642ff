
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
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run a server (one service of the cluster)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print shell completions (or write every shell''s file with --dir)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;serve' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
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
            [CompletionResult]::new('--nodes', '--nodes', [CompletionResultType]::ParameterName, 'Number of storage nodes (node-1, node-2, …)')
            [CompletionResult]::new('--gateway-port', '--gateway-port', [CompletionResultType]::ParameterName, 'Gateway port (0 picks a free one)')
            [CompletionResult]::new('--users-port', '--users-port', [CompletionResultType]::ParameterName, 'Users service port (0 picks a free one)')
            [CompletionResult]::new('--node-port', '--node-port', [CompletionResultType]::ParameterName, 'Port of node-1; the others take the next free numbers (0: every node picks a free one)')
            [CompletionResult]::new('--replicator-port', '--replicator-port', [CompletionResultType]::ParameterName, 'Replicator port (0 picks a free one)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'ydht;serve;node' {
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port to listen on')
            [CompletionResult]::new('--node-id', '--node-id', [CompletionResultType]::ParameterName, 'This node''s id; its WAL and snapshots live in <data-dir>/<node-id>/')
            [CompletionResult]::new('--max-value-bytes', '--max-value-bytes', [CompletionResultType]::ParameterName, 'Largest value accepted, in bytes (larger bodies get 413 before being read)')
            [CompletionResult]::new('--wal-max-bytes', '--wal-max-bytes', [CompletionResultType]::ParameterName, 'Snapshot and start a new WAL segment when the active one reaches this many bytes')
            [CompletionResult]::new('--sync-mode', '--sync-mode', [CompletionResultType]::ParameterName, 'group: concurrent writes share one fdatasync; per-write: one fdatasync per write (for benchmarks)')
            [CompletionResult]::new('--tombstone-grace', '--tombstone-grace', [CompletionResultType]::ParameterName, 'How long tombstones and expired entries keep their version before being purged')
            [CompletionResult]::new('--peers', '--peers', [CompletionResultType]::ParameterName, 'Every storage node of the cluster, this one included (id=url,…; same format as the gateway''s); enables anti-entropy with the others')
            [CompletionResult]::new('--replicas', '--replicas', [CompletionResultType]::ParameterName, 'Copies kept of every key (must match the gateway''s; decides which keys this node shares with each peer)')
            [CompletionResult]::new('--vnodes', '--vnodes', [CompletionResultType]::ParameterName, 'Virtual nodes per physical node on the ring (must match the gateway''s)')
            [CompletionResult]::new('--anti-entropy-interval', '--anti-entropy-interval', [CompletionResultType]::ParameterName, 'Time between anti-entropy rounds with the peers; 0 disables anti-entropy')
            [CompletionResult]::new('--anti-entropy-max-keys', '--anti-entropy-max-keys', [CompletionResultType]::ParameterName, 'Most records one anti-entropy round transfers (pulled + pushed), so repairs never starve client traffic')
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to bind; use 0.0.0.0 to accept connections from other machines')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'Shared secret guarding internal endpoints [default: generated once into the data dir]')
            [CompletionResult]::new('--salvage-wal', '--salvage-wal', [CompletionResultType]::ParameterName, 'Start despite a corrupt WAL segment by truncating it at the first bad record (later records are lost)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'ydht;serve;replicator' {
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to bind; use 0.0.0.0 to accept connections from other machines')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'Shared secret guarding internal endpoints [default: generated once into the data dir]')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port to listen on (0 picks a free one)')
            [CompletionResult]::new('--max-queue', '--max-queue', [CompletionResultType]::ParameterName, 'Most unfinished jobs kept; beyond it new jobs get 503 with Retry-After')
            [CompletionResult]::new('--max-queue-bytes', '--max-queue-bytes', [CompletionResultType]::ParameterName, 'Most bytes of values held by unfinished jobs; beyond it new jobs get 503')
            [CompletionResult]::new('--max-value-bytes', '--max-value-bytes', [CompletionResultType]::ParameterName, 'Largest value a job may carry, in bytes; larger bodies get 413')
            [CompletionResult]::new('--wait-timeout', '--wait-timeout', [CompletionResultType]::ParameterName, 'With `x-ydht-wait`, how long to wait for the acknowledgements before answering 504')
            [CompletionResult]::new('--retry-base', '--retry-base', [CompletionResultType]::ParameterName, 'Delay before the first retry of a failed replica write (doubles each retry, plus jitter)')
            [CompletionResult]::new('--probe-interval', '--probe-interval', [CompletionResultType]::ParameterName, 'How often nodes holding hinted handoffs are probed with /health')
            [CompletionResult]::new('--request-timeout', '--request-timeout', [CompletionResultType]::ParameterName, 'Timeout of one request to a node')
            [CompletionResult]::new('--compact-bytes', '--compact-bytes', [CompletionResultType]::ParameterName, 'Rewrite the queue log when it grows past this many bytes (mostly finished work)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'ydht;serve;users' {
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to bind; use 0.0.0.0 to accept connections from other machines')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'Shared secret guarding internal endpoints [default: generated once into the data dir]')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port to listen on')
            [CompletionResult]::new('--database-url', '--database-url', [CompletionResultType]::ParameterName, 'Database: postgres://user:pass@host:5432/db or sqlite:///path/users.db [default: <data-dir>/users.db]')
            [CompletionResult]::new('--jwt-secret', '--jwt-secret', [CompletionResultType]::ParameterName, 'Secret signing access tokens (HS256) [default: generated once into <data-dir>/jwt.secret]')
            [CompletionResult]::new('--jwt-expiration', '--jwt-expiration', [CompletionResultType]::ParameterName, 'Access-token lifetime, e.g. 15m, 1h, 24h')
            [CompletionResult]::new('--gateway-url', '--gateway-url', [CompletionResultType]::ParameterName, 'Base URL of the gateway, for the dashboard''s key browser')
            [CompletionResult]::new('--secure-cookies', '--secure-cookies', [CompletionResultType]::ParameterName, 'Mark cookies `Secure` (set when the pages are served over HTTPS)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'ydht;serve;gateway' {
            [CompletionResult]::new('--data-dir', '--data-dir', [CompletionResultType]::ParameterName, 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]')
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to bind; use 0.0.0.0 to accept connections from other machines')
            [CompletionResult]::new('--cluster-secret', '--cluster-secret', [CompletionResultType]::ParameterName, 'Shared secret guarding internal endpoints [default: generated once into the data dir]')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port to listen on (0 picks a free one)')
            [CompletionResult]::new('--nodes', '--nodes', [CompletionResultType]::ParameterName, 'Storage nodes: comma-separated `id=http://host:port` (or bare URLs)')
            [CompletionResult]::new('--replicator-url', '--replicator-url', [CompletionResultType]::ParameterName, 'Base URL of the replicator')
            [CompletionResult]::new('--users-url', '--users-url', [CompletionResultType]::ParameterName, 'Base URL of the users service (API-key validation, usage)')
            [CompletionResult]::new('--replicas', '--replicas', [CompletionResultType]::ParameterName, 'Copies kept of every key (N)')
            [CompletionResult]::new('--vnodes', '--vnodes', [CompletionResultType]::ParameterName, 'Virtual nodes per storage node on the ring')
            [CompletionResult]::new('--rate-limit-per-minute', '--rate-limit-per-minute', [CompletionResultType]::ParameterName, 'Requests per minute each user''s bucket refills (0 disables rate limiting)')
            [CompletionResult]::new('--rate-limit-burst', '--rate-limit-burst', [CompletionResultType]::ParameterName, 'Requests a user may make in a burst')
            [CompletionResult]::new('--max-value-bytes', '--max-value-bytes', [CompletionResultType]::ParameterName, 'Largest value accepted, in bytes (larger → 413)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
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
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'ydht;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run a server (one service of the cluster)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print shell completions (or write every shell''s file with --dir)')
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
        'ydht;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
