
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
            cand --output 'Output format'
            cand --gateway 'gateway'
            cand --users 'users'
            cand --api-key 'api-key'
            cand --config-dir 'config-dir'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand serve 'Run a server (one service of the cluster)'
            cand completions 'Print shell completions (or write every shell''s file with --dir)'
            cand top 'Live dashboard of the cluster: ring, replication, gateway traffic, history, events'
            cand signup 'Create an account and log in'
            cand login 'Log in; tokens are kept in the config dir (mode 0600) and refreshed automatically'
            cand logout 'Revoke the login session and forget its tokens'
            cand whoami 'Show who is logged in'
            cand apikey 'Manage your API keys'
            cand kv 'Store, read, delete, count, list and locate your keys (uses an API key)'
            cand cluster 'Change the cluster online: join or remove storage nodes, watch the data move'
            cand status 'Health and metrics of every service, as one table; exit 4 if any is down'
            cand backup 'Copy every live record of the cluster (or of one tenant) into a compressed, checksummed file'
            cand restore 'Write a backup file''s records back into the running cluster (newer data already there stays)'
            cand man 'Print the manual page (or write one per command with --dir)'
            cand bench 'Load generator: throughput and latency percentiles of puts/gets (gateway, or one node with --target-node)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;serve'= {
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
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
            cand --tls-cert 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)'
            cand --tls-key 'PEM private key of --tls-cert'
            cand --log-format 'Log lines as text, or as one JSON object per line (for log collectors)'
            cand --nodes 'Number of storage nodes (node-1, node-2, …)'
            cand --gateway-port 'Gateway port (0 picks a free one)'
            cand --users-port 'Users service port (0 picks a free one)'
            cand --node-port 'Port of node-1; the others take the next free numbers (0: every node picks a free one)'
            cand --replicator-port 'Replicator port (0 picks a free one)'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;serve;node'= {
            cand --port 'Port to listen on'
            cand --node-id 'This node''s id; its WAL and snapshots live in <data-dir>/<node-id>/'
            cand --max-value-bytes 'Largest value accepted, in bytes (larger bodies get 413 before being read)'
            cand --wal-max-bytes 'Snapshot and start a new WAL segment when the active one reaches this many bytes'
            cand --sync-mode 'group: concurrent writes share one fdatasync; per-write: one fdatasync per write (for benchmarks)'
            cand --feed-retention 'How long the change feed (`GET /feed`, for watches) keeps changes: WAL segments a snapshot covers are removed only once they were last written this long ago (0: at once)'
            cand --feed-retention-changes 'How many changes the change feed keeps at least: a WAL segment a snapshot covers is also kept until this many WAL entries were logged after it (0: no minimum)'
            cand --tombstone-grace 'How long tombstones and expired entries keep their version before being purged; with peers, a tombstone is purged only once every peer is also known to hold it (a peer that is down holds them back)'
            cand --peers 'Every storage node of the cluster, this one included (id=url,… or bare URLs, the gateway''s format; a bare URL is this node when it is its --advertise-url or the host:port it listens on); enables anti-entropy with the others'
            cand --replicas 'Copies kept of every key (must match the gateway''s; decides which keys this node shares with each peer)'
            cand --vnodes 'Virtual nodes per physical node on the ring (must match the gateway''s)'
            cand --anti-entropy-interval 'Time between anti-entropy rounds with the peers; 0 disables anti-entropy'
            cand --anti-entropy-max-keys 'Most records one anti-entropy round transfers (pulled + pushed), so repairs never starve client traffic'
            cand --join 'Register this node at start through the gateway at this URL and follow the cluster membership: online joins and removals, rebalancing, anti-entropy with every member'
            cand --advertise-url 'The URL other services reach this node at [default: http(s)://HOST:PORT it bound]'
            cand --rebalance-rate 'Most records per second this node pulls while rebalancing after a membership change'
            cand --data-dir 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]'
            cand --host 'Address to bind; use 0.0.0.0 to accept connections from other machines'
            cand --cluster-secret 'Shared secret guarding internal endpoints [default: generated once into the data dir]'
            cand --tls-cert 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)'
            cand --tls-key 'PEM private key of --tls-cert'
            cand --log-format 'Log lines as text, or as one JSON object per line (for log collectors)'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --salvage-wal 'Start despite a corrupt WAL segment by truncating it at the first bad record (later records are lost)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;serve;replicator'= {
            cand --data-dir 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]'
            cand --host 'Address to bind; use 0.0.0.0 to accept connections from other machines'
            cand --cluster-secret 'Shared secret guarding internal endpoints [default: generated once into the data dir]'
            cand --tls-cert 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)'
            cand --tls-key 'PEM private key of --tls-cert'
            cand --log-format 'Log lines as text, or as one JSON object per line (for log collectors)'
            cand --port 'Port to listen on (0 picks a free one)'
            cand --max-queue 'Most unfinished jobs kept; beyond it new jobs get 503 with Retry-After'
            cand --max-queue-bytes 'Most bytes of values held by unfinished jobs; beyond it new jobs get 503'
            cand --max-value-bytes 'Largest value a job may carry, in bytes; larger bodies get 413'
            cand --wait-timeout 'With `x-ydht-wait`, how long to wait for the acknowledgements before answering 504'
            cand --retry-base 'Delay before the first retry of a failed replica write (doubles each retry, plus jitter)'
            cand --probe-interval 'How often nodes holding hinted handoffs are probed with /health'
            cand --request-timeout 'Timeout of one request to a node'
            cand --compact-bytes 'Rewrite the queue log when it grows past this many bytes (mostly finished work)'
            cand --users-url 'Follow the cluster membership at this users service: copies for a node that left the cluster (`ydht cluster leave`, also `--force`) go to the key''s current owners instead'
            cand --replicas 'Copies kept of every key (N), as the gateway''s (to find a key''s owners)'
            cand --vnodes 'Virtual nodes per storage node on the ring, as the gateway''s'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;serve;users'= {
            cand --data-dir 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]'
            cand --host 'Address to bind; use 0.0.0.0 to accept connections from other machines'
            cand --cluster-secret 'Shared secret guarding internal endpoints [default: generated once into the data dir]'
            cand --tls-cert 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)'
            cand --tls-key 'PEM private key of --tls-cert'
            cand --log-format 'Log lines as text, or as one JSON object per line (for log collectors)'
            cand --port 'Port to listen on'
            cand --database-url 'Database: postgres://user:pass@host:5432/db or sqlite:///path/users.db [default: <data-dir>/users.db]'
            cand --jwt-secret 'Secret signing access tokens (HS256) [default: generated once into <data-dir>/jwt.secret]'
            cand --jwt-expiration 'Access-token lifetime, e.g. 15m, 1h, 24h'
            cand --gateway-url 'Base URL of the gateway, for the dashboard''s key browser'
            cand --signups-per-hour 'Sign-ups allowed per client address (IPv6: per /64) and hour; 0 = no limit'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --secure-cookies 'Mark cookies `Secure` (set when the pages are served over HTTPS)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;serve;gateway'= {
            cand --data-dir 'Directory for data and generated secrets [default: the platform data dir, e.g. ~/.local/share/ydht]'
            cand --host 'Address to bind; use 0.0.0.0 to accept connections from other machines'
            cand --cluster-secret 'Shared secret guarding internal endpoints [default: generated once into the data dir]'
            cand --tls-cert 'PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key)'
            cand --tls-key 'PEM private key of --tls-cert'
            cand --log-format 'Log lines as text, or as one JSON object per line (for log collectors)'
            cand --port 'Port to listen on (0 picks a free one)'
            cand --nodes 'Storage nodes: comma-separated `id=http://host:port` (or bare URLs)'
            cand --replicator-url 'Base URL of the replicator'
            cand --users-url 'Base URL of the users service (API-key validation, usage)'
            cand --replicas 'Copies kept of every key (N)'
            cand --vnodes 'Virtual nodes per storage node on the ring'
            cand --rate-limit-per-minute 'Requests per minute each user''s bucket refills (0 disables rate limiting)'
            cand --rate-limit-burst 'Requests a user may make in a burst'
            cand --max-value-bytes 'Largest value accepted, in bytes (larger → 413)'
            cand --auth-failures-per-minute 'Failed API-key checks allowed per client address and minute before 429 (0 disables)'
            cand --max-clock-offset 'Largest offset between this gateway''s clock and the storage nodes'' (median) it writes with; past it writes get 503 until the clocks agree again (`500ms`, `2s`)'
            cand --max-watches-per-tenant 'Most watches (`GET /v1/watch`) one account may have open on this gateway (429 past it)'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
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
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;top'= {
            cand --interval 'How often to poll the services, e.g. 500ms, 1s, 5s'
            cand --cluster-secret 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]'
            cand --data-dir 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;signup'= {
            cand --email 'Account email'
            cand --username 'Account name: 3–32 letters, digits, `_` or `-`'
            cand --users 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --password-stdin 'Read the password from stdin instead of prompting (for scripts)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;login'= {
            cand --email 'Account email'
            cand --users 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --password-stdin 'Read the password from stdin instead of prompting (for scripts)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;logout'= {
            cand --users 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --all 'Also forget the default API key stored by `apikey create --use`'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;whoami'= {
            cand --users 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;apikey'= {
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand create 'Create an API key (its full value is shown once)'
            cand list 'List your API keys (never their full value)'
            cand revoke 'Revoke an API key by id; it stops working at the gateway within seconds'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;apikey;create'= {
            cand --name 'A name to recognise the key by'
            cand --scopes 'Comma-separated scopes'
            cand --expires-in-days 'Days until the key expires, 1–3650 [default: never]'
            cand --users 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --use 'Store the key as the default for `ydht kv` (in credentials.json, mode 0600)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;apikey;list'= {
            cand --users 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;apikey;revoke'= {
            cand --users 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;apikey;help'= {
            cand create 'Create an API key (its full value is shown once)'
            cand list 'List your API keys (never their full value)'
            cand revoke 'Revoke an API key by id; it stops working at the gateway within seconds'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;apikey;help;create'= {
        }
        &'ydht;apikey;help;list'= {
        }
        &'ydht;apikey;help;revoke'= {
        }
        &'ydht;apikey;help;help'= {
        }
        &'ydht;kv'= {
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand put 'Store a value: from VALUE, --file, or stdin (binary-safe)'
            cand get 'Print a value''s raw bytes (or write them to -o FILE); exit 1 if the key does not exist'
            cand delete 'Delete a key; exit 1 if it does not exist'
            cand incr 'Add to an integer counter (decimal text) with compare-and-set; a missing key counts from 0'
            cand list 'List your keys'
            cand locate 'Show a key''s primary and replicas and the version each holds (needs the cluster secret)'
            cand import 'Load keys from a JSON-lines file (key, value or value_base64, content_type, ttl), in batches'
            cand export 'Write every key (or those under --prefix) as JSON lines, with its TTL left, to stdout'
            cand watch 'Print changes (put, delete, expire) as they happen until Ctrl-C; reconnects and resumes by itself'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;kv;put'= {
            cand -f 'Read the value from this file'
            cand --file 'Read the value from this file'
            cand --ttl 'Expire the key after this long: 30s, 30m, 1h, 24h, 1h30m'
            cand --consistency 'Consistency level of the write [default: eventual]'
            cand --content-type 'Content type stored with the value [default: application/octet-stream]'
            cand --if-version 'Write only if the key is at this version (as `kv get --show-version` prints it); else exit 5'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --api-key 'API key [default: the one stored by `apikey create --use`]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --if-absent 'Write only if the key does not exist (absent, deleted or expired); else exit 5'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;kv;get'= {
            cand -o 'Write the value to this file instead of stdout'
            cand --output-file 'Write the value to this file instead of stdout'
            cand --consistency 'Consistency level of the read [default: eventual]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --api-key 'API key [default: the one stored by `apikey create --use`]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --show-version 'Also print the value''s version (`version: V` after the value), for --if-version'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;kv;delete'= {
            cand --consistency 'Consistency level of the delete [default: eventual]'
            cand --if-version 'Delete only if the key is at this version; else exit 5'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --api-key 'API key [default: the one stored by `apikey create --use`]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;kv;incr'= {
            cand --by 'How much to add (negative to subtract)'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --api-key 'API key [default: the one stored by `apikey create --use`]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;kv;list'= {
            cand --prefix 'Only keys starting with this prefix'
            cand --limit 'Show at most this many keys [default: all]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --api-key 'API key [default: the one stored by `apikey create --use`]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;kv;locate'= {
            cand --cluster-secret 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]'
            cand --data-dir 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --users 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]'
            cand --api-key 'API key [default: the one stored by `apikey create --use`]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;kv;import'= {
            cand --consistency 'Consistency level of the writes [default: eventual]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --api-key 'API key [default: the one stored by `apikey create --use`]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;kv;export'= {
            cand --prefix 'Only keys starting with this prefix'
            cand --consistency 'Consistency level of the reads [default: eventual]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --api-key 'API key [default: the one stored by `apikey create --use`]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;kv;watch'= {
            cand --prefix 'Watch the keys starting with this prefix (default: every key)'
            cand --since 'Start after this cursor (an event''s id, printed with --output json) instead of now'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --api-key 'API key [default: the one stored by `apikey create --use`]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --values 'Include each put''s value in the output'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;kv;help'= {
            cand put 'Store a value: from VALUE, --file, or stdin (binary-safe)'
            cand get 'Print a value''s raw bytes (or write them to -o FILE); exit 1 if the key does not exist'
            cand delete 'Delete a key; exit 1 if it does not exist'
            cand incr 'Add to an integer counter (decimal text) with compare-and-set; a missing key counts from 0'
            cand list 'List your keys'
            cand locate 'Show a key''s primary and replicas and the version each holds (needs the cluster secret)'
            cand import 'Load keys from a JSON-lines file (key, value or value_base64, content_type, ttl), in batches'
            cand export 'Write every key (or those under --prefix) as JSON lines, with its TTL left, to stdout'
            cand watch 'Print changes (put, delete, expire) as they happen until Ctrl-C; reconnects and resumes by itself'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;kv;help;put'= {
        }
        &'ydht;kv;help;get'= {
        }
        &'ydht;kv;help;delete'= {
        }
        &'ydht;kv;help;incr'= {
        }
        &'ydht;kv;help;list'= {
        }
        &'ydht;kv;help;locate'= {
        }
        &'ydht;kv;help;import'= {
        }
        &'ydht;kv;help;export'= {
        }
        &'ydht;kv;help;watch'= {
        }
        &'ydht;kv;help;help'= {
        }
        &'ydht;cluster'= {
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand join 'Add a storage node to the ring; its share of the keys moves to it while the cluster keeps serving (the node must run with --join, which registers it by itself)'
            cand leave 'Remove a storage node; its keys move to the others before it goes (--force: it is dead, rebuild from the copies)'
            cand status 'The members, their states (joining, active, leaving, down) and the progress of a change'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;cluster;join'= {
            cand --id 'The node''s id [default: asked from the node''s /health]'
            cand --cluster-secret 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]'
            cand --data-dir 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --no-wait 'Return once the change is recorded, without waiting for the data to move'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;cluster;leave'= {
            cand --cluster-secret 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]'
            cand --data-dir 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --force 'The node is gone for good: rebuild its keys from the other copies instead of from it'
            cand --no-wait 'Return once the change is recorded, without waiting for the data to move'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;cluster;status'= {
            cand --cluster-secret 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]'
            cand --data-dir 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;cluster;help'= {
            cand join 'Add a storage node to the ring; its share of the keys moves to it while the cluster keeps serving (the node must run with --join, which registers it by itself)'
            cand leave 'Remove a storage node; its keys move to the others before it goes (--force: it is dead, rebuild from the copies)'
            cand status 'The members, their states (joining, active, leaving, down) and the progress of a change'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'ydht;cluster;help;join'= {
        }
        &'ydht;cluster;help;leave'= {
        }
        &'ydht;cluster;help;status'= {
        }
        &'ydht;cluster;help;help'= {
        }
        &'ydht;status'= {
            cand --cluster-secret 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]'
            cand --data-dir 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --users 'Users service base URL [default: config.json''s users_url, else http://127.0.0.1:8081]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;backup'= {
            cand --out 'Write the backup to this file (replaced if it exists; written to FILE.partial first)'
            cand --tenant 'Only this tenant''s keys (its user id, as `ydht whoami` shows it)'
            cand --cluster-secret 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]'
            cand --data-dir 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;restore'= {
            cand --cluster-secret 'The cluster secret [default: read from cluster.secret in the data dir, as the servers do]'
            cand --data-dir 'Data dir of a cluster on this machine, for its cluster.secret [default: the platform data dir]'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;man'= {
            cand --dir 'Write `ydht.1` and one page per subcommand (`ydht-kv-put.1`, …) into this directory instead of printing `ydht.1`'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;bench'= {
            cand --op 'Operation to measure'
            cand -c 'Concurrent clients (one keep-alive connection and one request in flight each)'
            cand --clients 'Concurrent clients (one keep-alive connection and one request in flight each)'
            cand --duration 'Measure for this long (`30s`, `2m`); the default unless --requests is given'
            cand -n 'Measure exactly this many requests instead of a duration'
            cand --requests 'Measure exactly this many requests instead of a duration'
            cand --value-size 'Value size in bytes'
            cand --keys 'Number of distinct keys (`bench/<random>/0` …)'
            cand --consistency 'Consistency level of gateway requests (`X-Consistency`)'
            cand --ttl 'Time to live of the written keys (`10m`), so they expire after the run'
            cand --warmup 'Warm-up before measuring (not counted); `0s` skips it'
            cand --timeout 'Per-request timeout'
            cand --target-node 'Measure one storage node''s internal /store directly (one hop) instead of the gateway'
            cand --cluster-secret 'Cluster secret for --target-node (the data dir''s cluster.secret)'
            cand --target-etcd 'Measure etcd''s v3 HTTP/JSON gateway at this URL (for bench/compare.sh)'
            cand --batch 'Send the puts N to a request, as one `POST /v1/batch` (gateway, --op put); every key counts as an operation, with its batch''s latency (--requests counts batch requests)'
            cand --watchers 'Measure change streams instead: open N watches (GET /v1/watch) on the run''s prefix while --clients writers put keys under it at --rate writes/s for --duration; report the delay from each write''s 200 to its event, and events lost or repeated'
            cand --rate 'Writes per second, all writers together, with --watchers'
            cand --server-pid 'Also report the CPU time (user + system) these server processes spent per measured operation, from /proc (repeat for several processes; Linux only)'
            cand --gateway 'Gateway base URL [default: config.json''s gateway_url, else http://127.0.0.1:8080]'
            cand --api-key 'API key [default: the one stored by `apikey create --use`]'
            cand --config-dir 'Directory of config.json and credentials.json [default: the platform config dir, e.g. ~/.config/ydht]'
            cand --output 'Output format'
            cand --ca-file 'PEM file of a private certificate authority to trust for https:// URLs (clients and cluster traffic)'
            cand --keep 'Keep the keys the run wrote (`bench/<random>/…`) instead of deleting them afterwards'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'ydht;help'= {
            cand serve 'Run a server (one service of the cluster)'
            cand completions 'Print shell completions (or write every shell''s file with --dir)'
            cand top 'Live dashboard of the cluster: ring, replication, gateway traffic, history, events'
            cand signup 'Create an account and log in'
            cand login 'Log in; tokens are kept in the config dir (mode 0600) and refreshed automatically'
            cand logout 'Revoke the login session and forget its tokens'
            cand whoami 'Show who is logged in'
            cand apikey 'Manage your API keys'
            cand kv 'Store, read, delete, count, list and locate your keys (uses an API key)'
            cand cluster 'Change the cluster online: join or remove storage nodes, watch the data move'
            cand status 'Health and metrics of every service, as one table; exit 4 if any is down'
            cand backup 'Copy every live record of the cluster (or of one tenant) into a compressed, checksummed file'
            cand restore 'Write a backup file''s records back into the running cluster (newer data already there stays)'
            cand man 'Print the manual page (or write one per command with --dir)'
            cand bench 'Load generator: throughput and latency percentiles of puts/gets (gateway, or one node with --target-node)'
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
        &'ydht;help;top'= {
        }
        &'ydht;help;signup'= {
        }
        &'ydht;help;login'= {
        }
        &'ydht;help;logout'= {
        }
        &'ydht;help;whoami'= {
        }
        &'ydht;help;apikey'= {
            cand create 'Create an API key (its full value is shown once)'
            cand list 'List your API keys (never their full value)'
            cand revoke 'Revoke an API key by id; it stops working at the gateway within seconds'
        }
        &'ydht;help;apikey;create'= {
        }
        &'ydht;help;apikey;list'= {
        }
        &'ydht;help;apikey;revoke'= {
        }
        &'ydht;help;kv'= {
            cand put 'Store a value: from VALUE, --file, or stdin (binary-safe)'
            cand get 'Print a value''s raw bytes (or write them to -o FILE); exit 1 if the key does not exist'
            cand delete 'Delete a key; exit 1 if it does not exist'
            cand incr 'Add to an integer counter (decimal text) with compare-and-set; a missing key counts from 0'
            cand list 'List your keys'
            cand locate 'Show a key''s primary and replicas and the version each holds (needs the cluster secret)'
            cand import 'Load keys from a JSON-lines file (key, value or value_base64, content_type, ttl), in batches'
            cand export 'Write every key (or those under --prefix) as JSON lines, with its TTL left, to stdout'
            cand watch 'Print changes (put, delete, expire) as they happen until Ctrl-C; reconnects and resumes by itself'
        }
        &'ydht;help;kv;put'= {
        }
        &'ydht;help;kv;get'= {
        }
        &'ydht;help;kv;delete'= {
        }
        &'ydht;help;kv;incr'= {
        }
        &'ydht;help;kv;list'= {
        }
        &'ydht;help;kv;locate'= {
        }
        &'ydht;help;kv;import'= {
        }
        &'ydht;help;kv;export'= {
        }
        &'ydht;help;kv;watch'= {
        }
        &'ydht;help;cluster'= {
            cand join 'Add a storage node to the ring; its share of the keys moves to it while the cluster keeps serving (the node must run with --join, which registers it by itself)'
            cand leave 'Remove a storage node; its keys move to the others before it goes (--force: it is dead, rebuild from the copies)'
            cand status 'The members, their states (joining, active, leaving, down) and the progress of a change'
        }
        &'ydht;help;cluster;join'= {
        }
        &'ydht;help;cluster;leave'= {
        }
        &'ydht;help;cluster;status'= {
        }
        &'ydht;help;status'= {
        }
        &'ydht;help;backup'= {
        }
        &'ydht;help;restore'= {
        }
        &'ydht;help;man'= {
        }
        &'ydht;help;bench'= {
        }
        &'ydht;help;help'= {
        }
    ]
    $completions[$command]
}
