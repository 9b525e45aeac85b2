// Package notify tells people about what dcvd cannot fix alone: a reissue
// that failed, e-mail validation waiting for approval, a certificate close
// to expiry without a renewal, a failed deployment or reload, the service
// subscription ending — and, for those who want it, every renewal.
//
// A Notifier routes each Event to every configured Channel whose Level
// admits it ("error" < "renewal" < "all"). Notify only queues, so the
// daemon is never held up by a receiver: one worker delivers, retries a
// failure with backoff a bounded number of times, and gives up with a log
// line; a full queue drops (and counts) events rather than block. Close
// drains the queue before the process exits.
//
// Channels, configured by Parse from a [notify.NAME] section:
//
//   - webhook: POSTs the event as JSON (kind, level, cert, unique_id, title,
//     text, fields, time) with X-Dcvd-Timestamp and, when a secret is set,
//     X-Dcvd-Signature: sha256=hex(HMAC-SHA256(secret, timestamp "." body)).
//   - smtp: a plain-text UTF-8 e-mail over STARTTLS (default), implicit TLS
//     (port 465) or, for a relay on the same machine, no TLS; AUTH PLAIN
//     when a username is set.
//   - wecom: a WeCom (企业微信) group robot markdown message.
//   - dingtalk: a DingTalk (钉钉) custom robot markdown message, signed
//     (加签) when a secret is set.
//   - feishu: a Feishu/Lark (飞书) custom bot text message, signed
//     (签名校验) when a secret is set.
//
// Every title starts with "dcvd", so a robot protected by a custom keyword
// accepts dcvd's messages when the keyword is "dcvd".
//
// Tokens, keys, passwords and signing secrets come from the config, a file
// (KEY_file, such as one in $CREDENTIALS_DIRECTORY) or the environment
// (KEY_env). They never appear in errors or logs: HTTP errors name only the
// scheme and host of the endpoint, since robot tokens live in URLs.
// Redirects are not followed and replies are read only up to a limit.
package notify
