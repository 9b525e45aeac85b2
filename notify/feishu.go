package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// FeishuURL is the base of Feishu (飞书) custom bot webhooks; the bot's
// hook ID is the last path segment. Lark's is
// https://open.larksuite.com/open-apis/bot/v2/hook (set url).
const FeishuURL = "https://open.feishu.cn/open-apis/bot/v2/hook"

// feishuMaxText keeps the request well under Feishu's 20 KB body limit.
const feishuMaxText = 8000

// feishu posts text messages to a Feishu custom bot, signed when the bot
// has a secret (签名校验).
type feishu struct {
	httpTarget
	url    *url.URL // the full hook URL
	secret string
	now    func() time.Time
}

func (f *feishu) Name() string { return f.name }

// FeishuSign computes the sign field for a request at timestamp (Unix
// seconds): base64 of the HMAC-SHA256 keyed with the timestamp, a newline
// and the secret, of an empty message.
func FeishuSign(secret string, timestamp int64) string {
	mac := hmac.New(sha256.New, []byte(strconv.FormatInt(timestamp, 10)+"\n"+secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

type feishuMessage struct {
	Timestamp string `json:"timestamp,omitempty"`
	Sign      string `json:"sign,omitempty"`
	MsgType   string `json:"msg_type"`
	Content   struct {
		Text string `json:"text"`
	} `json:"content"`
}

// feishuReply covers both reply shapes: code/msg, and the older
// StatusCode/StatusMessage.
type feishuReply struct {
	Code          *int   `json:"code"`
	Msg           string `json:"msg"`
	StatusCode    *int   `json:"StatusCode"`
	StatusMessage string `json:"StatusMessage"`
}

// Send posts the event as a text message; code 0 (or StatusCode 0 in older
// replies) is success.
func (f *feishu) Send(ctx context.Context, e Event) error {
	var m feishuMessage
	m.MsgType = "text"
	m.Content.Text = truncate(e.subject()+"\n\n"+e.plainText(), feishuMaxText)
	if f.secret != "" {
		ts := f.now().Unix()
		m.Timestamp = strconv.FormatInt(ts, 10)
		m.Sign = FeishuSign(f.secret, ts)
	}
	body, err := json.Marshal(m)
	if err != nil {
		return Permanent(fmt.Errorf("%s: encoding the message: %w", f.prefix(), err))
	}
	reply, err := f.post(ctx, f.url, nil, body)
	if err != nil {
		return err
	}
	where := endpoint(f.url)
	var r feishuReply
	if err := json.Unmarshal(reply, &r); err != nil {
		return f.red.failf(nil, "%s: POST %s: the reply is not the bot's JSON%s", f.prefix(), where, snippet(reply))
	}
	switch {
	case r.Code != nil && *r.Code == 0:
		return nil
	case r.Code != nil:
		return f.red.failf(nil, "%s: POST %s: code %d: %s", f.prefix(), where, *r.Code, truncate(oneLine(r.Msg), maxSnippetBytes))
	case r.StatusCode != nil && *r.StatusCode == 0:
		return nil
	case r.StatusCode != nil:
		return f.red.failf(nil, "%s: POST %s: StatusCode %d: %s", f.prefix(), where, *r.StatusCode,
			truncate(oneLine(r.StatusMessage), maxSnippetBytes))
	}
	return f.red.failf(nil, "%s: POST %s: the reply has no code%s", f.prefix(), where, snippet(reply))
}
