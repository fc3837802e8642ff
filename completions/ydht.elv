
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
            cand serve 'Run a server (one service of the cluster)'
            cand completions 'Print shell completions (or write every shell''s file with --dir)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;serve'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand all 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)'
            cand node 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)'
            cand replicator 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
            cand users 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
            cand gateway 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;serve;all'= {
            cand --data-dir 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]'
            cand --host 'Address to bind; use 0.0.0.0 to accept connections from other machines'
            cand --cluster-secret 'Shared secret guarding internal endpoints [default: generated once into the data dir]'
            cand --nodes 'Number of storage nodes (node-1, node-2, …)'
            cand --gateway-port 'Gateway port (0 picks a free one)'
            cand --users-port 'Users service port (0 picks a free one)'
            cand --node-port 'Port of node-1; the others take the next free numbers (0: every node picks a free one)'
            cand --replicator-port 'Replicator port (0 picks a free one)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'ydht;serve;node'= {
            cand --port 'Port to listen on'
            cand --node-id 'This node''s id; its WAL and snapshots live in <data-dir>/<node-id>/'
            cand --max-value-bytes 'Largest value accepted, in bytes (larger bodies get 413 before being read)'
            cand --wal-max-bytes 'Snapshot and start a new WAL segment when the active one reaches this many bytes'
            cand --sync-mode 'group: concurrent writes share one fdatasync; per-write: one fdatasync per write (for benchmarks)'
            cand --tombstone-grace 'How long tombstones and expired entries keep their version before being purged'
            cand --peers 'Every storage node of the cluster, this one included (id=url,…; same format as the gateway''s); enables anti-entropy with the others'
            cand --replicas 'Copies kept of every key (must match the gateway''s; decides which keys this node shares with each peer)'
            cand --vnodes 'Virtual nodes per physical node on the ring (must match the gateway''s)'
            cand --anti-entropy-interval 'Time between anti-entropy rounds with the peers; 0 disables anti-entropy'
            cand --anti-entropy-max-keys 'Most records one anti-entropy round transfers (pulled + pushed), so repairs never starve client traffic'
            cand --data-dir 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]'
            cand --host 'Address to bind; use 0.0.0.0 to accept connections from other machines'
            cand --cluster-secret 'Shared secret guarding internal endpoints [default: generated once into the data dir]'
            cand --salvage-wal 'Start despite a corrupt WAL segment by truncating it at the first bad record (later records are lost)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;serve;replicator'= {
            cand --data-dir 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]'
            cand --host 'Address to bind; use 0.0.0.0 to accept connections from other machines'
            cand --cluster-secret 'Shared secret guarding internal endpoints [default: generated once into the data dir]'
            cand --port 'Port to listen on (0 picks a free one)'
            cand --max-queue 'Most unfinished jobs kept; beyond it new jobs get 503 with Retry-After'
            cand --max-queue-bytes 'Most bytes of values held by unfinished jobs; beyond it new jobs get 503'
            cand --max-value-bytes 'Largest value a job may carry, in bytes; larger bodies get 413'
            cand --wait-timeout 'With `x-ydht-wait`, how long to wait for the acknowledgements before answering 504'
            cand --retry-base 'Delay before the first retry of a failed replica write (doubles each retry, plus jitter)'
            cand --probe-interval 'How often nodes holding hinted handoffs are probed with /health'
            cand --request-timeout 'Timeout of one request to a node'
            cand --compact-bytes 'Rewrite the queue log when it grows past this many bytes (mostly finished work)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'ydht;serve;users'= {
            cand --data-dir 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]'
            cand --host 'Address to bind; use 0.0.0.0 to accept connections from other machines'
            cand --cluster-secret 'Shared secret guarding internal endpoints [default: generated once into the data dir]'
            cand --port 'Port to listen on'
            cand --database-url 'Database: postgres://user:pass@host:5432/db or sqlite:///path/users.db [default: <data-dir>/users.db]'
            cand --jwt-secret 'Secret signing access tokens (HS256) [default: generated once into <data-dir>/jwt.secret]'
            cand --jwt-expiration 'Access-token lifetime, e.g. 15m, 1h, 24h'
            cand --gateway-url 'Base URL of the gateway, for the dashboard''s key browser'
            cand --secure-cookies 'Mark cookies `Secure` (set when the pages are served over HTTPS)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'ydht;serve;gateway'= {
            cand --data-dir 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]'
            cand --host 'Address to bind; use 0.0.0.0 to accept connections from other machines'
            cand --cluster-secret 'Shared secret guarding internal endpoints [default: generated once into the data dir]'
            cand --port 'Port to listen on (0 picks a free one)'
            cand --nodes 'Storage nodes: comma-separated `id=http://host:port` (or bare URLs)'
            cand --replicator-url 'Base URL of the replicator'
            cand --users-url 'Base URL of the users service (API-key validation, usage)'
            cand --replicas 'Copies kept of every key (N)'
            cand --vnodes 'Virtual nodes per storage node on the ring'
            cand --rate-limit-per-minute 'Requests per minute each user''s bucket refills (0 disables rate limiting)'
            cand --rate-limit-burst 'Requests a user may make in a burst'
            cand --max-value-bytes 'Largest value accepted, in bytes (larger → 413)'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'ydht;serve;help'= {
            cand all 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)'
            cand node 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)'
            cand replicator 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
            cand users 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
            cand gateway 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;serve;help;all'= {
        }
        &'ydht;serve;help;node'= {
        }
        &'ydht;serve;help;replicator'= {
        }
        &'ydht;serve;help;users'= {
        }
        &'ydht;serve;help;gateway'= {
        }
        &'ydht;serve;help;help'= {
        }
        &'ydht;completions'= {
            cand --dir 'Write the files for every shell into this directory instead of printing'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'ydht;help'= {
            cand serve 'Run a server (one service of the cluster)'
            cand completions 'Print shell completions (or write every shell''s file with --dir)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;help;serve'= {
            cand all 'The whole cluster in one process: users, storage nodes, replicator, gateway (default ports 8080–8085)'
            cand node 'Run one storage node (WAL + snapshots in <data-dir>/<node-id>/)'
            cand replicator 'Replication service: durable job queue, parallel replica writes, retries, hinted handoff (port 8085)'
            cand users 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)'
            cand gateway 'Public KV API on 8080: /v1/kv with API keys, rate limits, tunable consistency'
        }
        &'ydht;help;serve;all'= {
        }
        &'ydht;help;serve;node'= {
        }
        &'ydht;help;serve;replicator'= {
        }
        &'ydht;help;serve;users'= {
        }
        &'ydht;help;serve;gateway'= {
        }
        &'ydht;help;completions'= {
        }
        &'ydht;help;help'= {
        }
    ]
    $completions[$command]
}
