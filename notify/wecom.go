package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
)

// WeComURL is the WeCom (企业微信) group robot endpoint; the robot's key
// goes in its key query parameter.
const WeComURL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"

// weComMaxContent is WeCom's limit on markdown.content, in bytes.
const weComMaxContent = 4096

// wecom posts markdown messages to a WeCom group robot.
type wecom struct {
	httpTarget
	url *url.URL // with the key in its query
}

func (w *wecom) Name() string { return w.name }

type weComMessage struct {
	MsgType  string `json:"msgtype"`
	Markdown struct {
		Content string `json:"content"`
	} `json:"markdown"`
}

// robotReply is the reply of the WeCom and DingTalk robots. A reply without
// errcode is not a success: a proxy or captive portal answering 200 must
// not pass for delivery.
type robotReply struct {
	ErrCode *int   `json:"errcode"`
	ErrMsg  string `json:"errmsg"`
}

// check turns a robot's reply into an error unless errcode is 0.
func (t *httpTarget) checkRobotReply(where string, body []byte) error {
	var r robotReply
	if err := json.Unmarshal(body, &r); err != nil {
		return t.red.failf(nil, "%s: POST %s: the reply is not the robot's JSON%s", t.prefix(), where, snippet(body))
	}
	if r.ErrCode == nil {
		return t.red.failf(nil, "%s: POST %s: the reply has no errcode%s", t.prefix(), where, snippet(body))
	}
	if *r.ErrCode != 0 {
		return t.red.failf(nil, "%s: POST %s: errcode %d: %s", t.prefix(), where, *r.ErrCode,
			truncate(oneLine(r.ErrMsg), maxSnippetBytes))
	}
	return nil
}

// Send posts the event as a markdown message; errcode 0 is success.
func (w *wecom) Send(ctx context.Context, e Event) error {
	var m weComMessage
	m.MsgType = "markdown"
	m.Markdown.Content = truncate(e.markdown(), weComMaxContent)
	body, err := json.Marshal(m)
	if err != nil {
		return Permanent(fmt.Errorf("%s: encoding the message: %w", w.prefix(), err))
	}
	reply, err := w.post(ctx, w.url, nil, body)
	if err != nil {
		return err
	}
	return w.checkRobotReply(endpoint(w.url), reply)
}
