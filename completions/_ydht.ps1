
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
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print shell completions (or write every shell''s file with --dir)')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run a server')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;completions' {
            [CompletionResult]::new('--dir', '--dir', [CompletionResultType]::ParameterName, 'Write the files for every shell into this directory instead of printing')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'ydht;serve' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('users', 'users', [CompletionResultType]::ParameterValue, 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
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
            [CompletionResult]::new('--secure-cookies', '--secure-cookies', [CompletionResultType]::ParameterName, 'Mark cookies `Secure` (set when the pages are served over HTTPS)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'ydht;serve;help' {
            [CompletionResult]::new('users', 'users', [CompletionResultType]::ParameterValue, 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;serve;help;users' {
            break
        }
        'ydht;serve;help;help' {
            break
        }
        'ydht;help' {
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print shell completions (or write every shell''s file with --dir)')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run a server')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'ydht;help;completions' {
            break
        }
        'ydht;help;serve' {
            [CompletionResult]::new('users', 'users', [CompletionResultType]::ParameterValue, 'Users service: JSON API, web pages, API keys; migrations applied at start (port 8081)')
            break
        }
        'ydht;help;serve;users' {
            break
        }
        'ydht;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
