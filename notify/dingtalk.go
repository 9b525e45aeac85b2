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

// DingTalkURL is the DingTalk (钉钉) custom robot endpoint; the robot's
// access_token goes in its query.
const DingTalkURL = "https://oapi.dingtalk.com/robot/send"

// dingTalkMaxText bounds markdown.text; DingTalk documents no exact limit,
// and a notification longer than this is unreadable on a phone anyway.
const dingTalkMaxText = 4096

// dingtalk posts markdown messages to a DingTalk custom robot, signed when
// the robot has a secret (加签).
type dingtalk struct {
	httpTarget
	url    *url.URL // with access_token in its query
	secret string
	now    func() time.Time
}

func (d *dingtalk) Name() string { return d.name }

// DingTalkSign computes the sign parameter (before URL encoding) for a
// request at timestamp (Unix milliseconds): base64 of the HMAC-SHA256,
// keyed with the secret, of the timestamp, a newline and the secret.
func DingTalkSign(secret string, timestampMillis int64) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(timestampMillis, 10) + "\n" + secret))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

type dingTalkMessage struct {
	MsgType  string `json:"msgtype"`
	Markdown struct {
		Title string `json:"title"`
		Text  string `json:"text"`
	} `json:"markdown"`
}

// Send posts the event as a markdown message; errcode 0 is success.
func (d *dingtalk) Send(ctx context.Context, e Event) error {
	var m dingTalkMessage
	m.MsgType = "markdown"
	m.Markdown.Title = e.subject()
	m.Markdown.Text = truncate(e.markdown(), dingTalkMaxText)
	body, err := json.Marshal(m)
	if err != nil {
		return Permanent(fmt.Errorf("%s: encoding the message: %w", d.prefix(), err))
	}
	u := *d.url
	if d.secret != "" {
		// The signature is valid for an hour around the timestamp, so it
		// is made for each attempt.
		ms := d.now().UnixMilli()
		q := u.Query()
		q.Set("timestamp", strconv.FormatInt(ms, 10))
		q.Set("sign", DingTalkSign(d.secret, ms))
		u.RawQuery = q.Encode()
	}
	reply, err := d.post(ctx, &u, nil, body)
	if err != nil {
		return err
	}
	return d.checkRobotReply(endpoint(&u), reply)
}
