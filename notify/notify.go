package notify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"
)

// Level orders events by importance and says which events a channel wants.
// A channel configured at level L receives every event whose own Level is
// at most L: "error" channels get only failures, "renewal" channels also
// get successful renewals, "all" channels get every event.
type Level int

// The levels, most important first. The zero Level is not a level: an event
// without one takes its Kind's default.
const (
	// LevelError: something failed or needs a human (config name "error").
	LevelError Level = iota + 1
	// LevelRenewal: a certificate was renewed (config name "renewal").
	LevelRenewal
	// LevelAll: routine progress such as step changes (config name "all").
	LevelAll
)

// String returns the level's configuration name.
func (l Level) String() string {
	switch l {
	case LevelError:
		return "error"
	case LevelRenewal:
		return "renewal"
	case LevelAll:
		return "all"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// ParseLevel reads a configuration name: "error", "renewal" or "all".
func ParseLevel(s string) (Level, error) {
	switch s {
	case "error":
		return LevelError, nil
	case "renewal":
		return LevelRenewal, nil
	case "all":
		return LevelAll, nil
	}
	return 0, fmt.Errorf("unknown level %q (known: error, renewal, all)", s)
}

// Valid reports whether l is one of the three levels.
func (l Level) Valid() bool { return l >= LevelError && l <= LevelAll }

// MarshalText writes the configuration name, so that JSON carries "error"
// rather than a number whose meaning could change.
func (l Level) MarshalText() ([]byte, error) {
	if !l.Valid() {
		return nil, fmt.Errorf("notify: invalid level %d", int(l))
	}
	return []byte(l.String()), nil
}

// UnmarshalText reads a configuration name.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Admits reports whether a channel configured at level l receives an event
// of level event.
func (l Level) Admits(event Level) bool {
	return l.Valid() && event.Valid() && event <= l
}

// Kind says what happened. Receivers may switch on it: the values are
// stable.
type Kind string

// The kinds of event dcvd sends.
const (
	// ReissueFailed: an order failed, or one step kept failing.
	ReissueFailed Kind = "reissue_failed"
	// EmailApproval: e-mail DCV waits for someone to approve.
	EmailApproval Kind = "email_approval"
	// ExpiringSoon: a certificate nears expiry without a successful renewal.
	ExpiringSoon Kind = "expiring_soon"
	// DeployFailed: the certificate files could not be installed.
	DeployFailed Kind = "deploy_failed"
	// ReloadFailed: the reload command failed (the previous files were restored).
	ReloadFailed Kind = "reload_failed"
	// SubscriptionEnding: the reseller's service subscription ends soon.
	SubscriptionEnding Kind = "subscription_ending"
	// Renewed: a renewed certificate is live.
	Renewed Kind = "renewed"
	// Recovered: a failure that was alerted is over. It goes to the
	// channels that were told of the failure.
	Recovered Kind = "recovered"
	// ScheduleStalled: the renewal schedule has no next run; no renewal
	// check happens until the configuration is mended.
	ScheduleStalled Kind = "schedule_stalled"
	// StepChanged: an order moved to its next step.
	StepChanged Kind = "step_changed"
	// Test: sent on request to check that a channel works.
	Test Kind = "test"
)

// DefaultLevel is the level of an event of kind k that does not set one.
// Unknown kinds count as errors: an event nobody anticipated is better seen
// than lost.
func (k Kind) DefaultLevel() Level {
	switch k {
	case Renewed:
		return LevelRenewal
	case StepChanged:
		return LevelAll
	}
	return LevelError
}

// defaultTitle is the title of an event that has none.
func (k Kind) defaultTitle(cert string) string {
	var what string
	switch k {
	case ReissueFailed:
		what = "reissue failed"
	case EmailApproval:
		what = "e-mail validation awaits approval"
	case ExpiringSoon:
		what = "certificate expiring soon"
	case DeployFailed:
		what = "deployment failed"
	case ReloadFailed:
		what = "reload failed"
	case SubscriptionEnding:
		what = "service subscription ending"
	case Renewed:
		what = "certificate renewed"
	case StepChanged:
		what = "order step changed"
	case Recovered:
		what = "recovered"
	case ScheduleStalled:
		what = "renewal schedule never fires"
	case Test:
		what = "test notification"
	default:
		what = string(k)
	}
	if cert == "" {
		return what
	}
	return cert + ": " + what
}

// Event is one notification. The JSON names are the generic webhook's
// format and are stable.
type Event struct {
	// Kind says what happened.
	Kind Kind `json:"kind"`
	// Level is the event's own importance; zero (or any invalid value)
	// means Kind.DefaultLevel().
	Level Level `json:"level"`
	// Cert is the certificate's configured name, if the event is about one.
	Cert string `json:"cert"`
	// UniqueID is the order's unique_id, if the event is about an order.
	UniqueID string `json:"unique_id"`
	// Title is a one-line summary; empty means one made from Kind and Cert.
	Title string `json:"title"`
	// Text says what happened and what to do, in plain text.
	Text string `json:"text"`
	// Fields are details (expiry date, step, serial …) shown as key: value.
	Fields map[string]string `json:"fields"`
	// Time is when it happened; zero means when Notify was called.
	Time time.Time `json:"time"`
}

// normalized fills the defaults Notify promises.
func (e Event) normalized(now time.Time) Event {
	if !e.Level.Valid() {
		e.Level = e.Kind.DefaultLevel()
	}
	if e.Time.IsZero() {
		e.Time = now
	}
	if strings.TrimSpace(e.Title) == "" {
		e.Title = e.Kind.defaultTitle(e.Cert)
	}
	return e
}

// fieldLines lists the event's details in a stable order: certificate and
// order first, then the fields by name, then the time.
func (e Event) fieldLines() [][2]string {
	var out [][2]string
	if e.Cert != "" {
		out = append(out, [2]string{"cert", e.Cert})
	}
	if e.UniqueID != "" {
		out = append(out, [2]string{"unique_id", e.UniqueID})
	}
	keys := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, [2]string{k, e.Fields[k]})
	}
	if !e.Time.IsZero() {
		out = append(out, [2]string{"time", e.Time.UTC().Format(time.RFC3339)})
	}
	return out
}

// subject is the one-line title shown by every channel. It starts with
// "dcvd" so that a robot protected by a keyword ("dcvd") accepts it.
func (e Event) subject() string {
	t := oneLine(e.Title)
	if !strings.HasPrefix(strings.ToLower(t), "dcvd") {
		t = "[dcvd] " + t
	}
	return truncate(t, 200)
}

// plainText is the body for plain-text channels (e-mail, Feishu text).
func (e Event) plainText() string {
	var b strings.Builder
	if text := cleanText(e.Text); text != "" {
		b.WriteString(text)
		b.WriteString("\n\n")
	}
	for _, kv := range e.fieldLines() {
		b.WriteString(oneLine(kv[0]))
		b.WriteString(": ")
		b.WriteString(oneLine(kv[1]))
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

// markdown is the body for the IM robots' markdown messages. Angle brackets
// are replaced because both robots give <...> a meaning (WeCom's <@userid>
// mentions and <font> tags): text that came from the CA's API must not
// mention people or restyle the message.
func (e Event) markdown() string {
	var b strings.Builder
	b.WriteString("### ")
	b.WriteString(mdSafe(e.subject()))
	b.WriteString("\n\n")
	if text := cleanText(e.Text); text != "" {
		b.WriteString(mdSafe(text))
		b.WriteString("\n\n")
	}
	for _, kv := range e.fieldLines() {
		b.WriteString("- **")
		b.WriteString(mdSafe(oneLine(kv[0])))
		b.WriteString("**: ")
		b.WriteString(mdSafe(oneLine(kv[1])))
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

var mdReplacer = strings.NewReplacer("<", "‹", ">", "›")

func mdSafe(s string) string { return mdReplacer.Replace(s) }

// cleanText drops control characters other than newline and tab, and
// normalizes line endings.
func cleanText(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' {
			return r
		}
		if r == '\r' || unicode.IsControl(r) || r == utf8.RuneError {
			return -1
		}
		return r
	}, s))
}

// oneLine makes s safe for one line (a header, a list item): every control
// character, CR and LF included, becomes a space, and runs of spaces one.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)), " ")
}

// truncate cuts s to at most max bytes at a rune boundary, marking the cut.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	const mark = "…"
	cut := max - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// Channel delivers events to one destination. Send must honour ctx, must
// not retry by itself (the Notifier does), and must never put a secret
// (token, key, password, signing secret) in its error.
type Channel interface {
	// Name is the configuration name (NAME in [notify.NAME]).
	Name() string
	// Send delivers one event.
	Send(ctx context.Context, e Event) error
}

// Configured is a channel and the level of events it receives.
type Configured struct {
	// Channel delivers the events.
	Channel Channel
	// Level is the least important level delivered; zero means LevelError.
	Level Level
}

// permanentError marks a failure that repeating cannot fix (the receiver
// refused the request as such), so the Notifier gives up at once.
type permanentError struct{ err error }

func (p *permanentError) Error() string { return p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying. Channels outside this package
// may use it; a nil err stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Defaults of Options.
const (
	DefaultQueueSize   = 256
	DefaultMaxAttempts = 5
	DefaultSendTimeout = 30 * time.Second
	// maxPendingRetries bounds the deliveries waiting for a retry, so that a
	// dead channel cannot grow memory without limit.
	maxPendingRetries = 1024
)

// DefaultBackoff returns the waits before the second, third … attempt
// (10s, 1m, 5m, 15m); the last one repeats.
func DefaultBackoff() []time.Duration {
	return []time.Duration{10 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute}
}

// Options tune a Notifier; zero fields take the defaults.
type Options struct {
	// QueueSize bounds the events waiting for the worker; Notify drops
	// (and counts) events beyond it rather than block.
	QueueSize int
	// MaxAttempts bounds the attempts per event and channel.
	MaxAttempts int
	// Backoff are the waits before each retry; the last one repeats.
	Backoff []time.Duration
	// SendTimeout bounds one attempt.
	SendTimeout time.Duration
}

// Stats counts what a Notifier did; each delivery is one event to one
// channel.
type Stats struct {
	// Sent deliveries succeeded.
	Sent uint64
	// Retried failed attempts that were scheduled again.
	Retried uint64
	// Failed deliveries were given up after their last attempt.
	Failed uint64
	// Dropped events (or deliveries) were never attempted or not retried
	// because a queue was full or the Notifier was closed.
	Dropped uint64
}

// Notifier routes events to every channel whose level admits them. Notify
// only queues: one worker delivers, retrying failures with backoff a
// bounded number of times, so a slow or dead receiver never holds up the
// daemon. It is safe for concurrent use.
type Notifier struct {
	channels []Configured
	log      *zap.Logger
	opts     Options
	now      func() time.Time

	mu     sync.RWMutex // guards closed against the send in Notify
	closed bool
	queue  chan Event

	ctx       context.Context // cancelled when Close gives up waiting
	cancel    context.CancelFunc
	abort     chan struct{}
	abortOnce sync.Once
	done      chan struct{}

	statsMu sync.Mutex
	stats   Stats
}

// New starts a Notifier with the default Options. A nil log discards logs.
func New(channels []Configured, log *zap.Logger) *Notifier {
	return NewWithOptions(channels, log, Options{})
}

// NewWithOptions starts a Notifier. Close must be called to stop its
// worker.
func NewWithOptions(channels []Configured, log *zap.Logger, opts Options) *Notifier {
	if log == nil {
		log = zap.NewNop()
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if len(opts.Backoff) == 0 {
		opts.Backoff = DefaultBackoff()
	}
	opts.Backoff = append([]time.Duration(nil), opts.Backoff...)
	if opts.SendTimeout <= 0 {
		opts.SendTimeout = DefaultSendTimeout
	}
	var chans []Configured
	for _, c := range channels {
		if c.Channel == nil {
			continue
		}
		if c.Level == 0 {
			c.Level = LevelError
		}
		chans = append(chans, c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Notifier{
		channels: chans,
		log:      log,
		opts:     opts,
		now:      time.Now,
		queue:    make(chan Event, opts.QueueSize),
		ctx:      ctx,
		cancel:   cancel,
		abort:    make(chan struct{}),
		done:     make(chan struct{}),
	}
	go n.run()
	return n
}

// Notify queues e for every channel whose level admits it and returns at
// once. When the queue is full, or after Close, the event is dropped,
// counted and logged.
func (n *Notifier) Notify(e Event) {
	e = e.normalized(n.now())
	if !n.wanted(e) {
		return
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		n.count(func(s *Stats) { s.Dropped++ })
		n.log.Warn("notification dropped: notifier closed", eventFields(e)...)
		return
	}
	select {
	case n.queue <- e:
	default:
		n.count(func(s *Stats) { s.Dropped++ })
		n.log.Warn("notification dropped: queue full",
			append(eventFields(e), zap.Int("queue_size", n.opts.QueueSize))...)
	}
}

// wanted reports whether any channel admits e.
func (n *Notifier) wanted(e Event) bool {
	for _, c := range n.channels {
		if c.Level.Admits(e.Level) {
			return true
		}
	}
	return false
}

// Close stops accepting events and waits until every queued event has been
// delivered or given up. Deliveries waiting for a retry get one last
// attempt at once rather than after their backoff, so that shutting down
// is not held up by a dead receiver. When ctx ends first, the attempt in
// flight is cancelled, what remains is dropped (and logged), and Close
// returns ctx's error. Close may be called more than once.
func (n *Notifier) Close(ctx context.Context) error {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.queue)
	}
	n.mu.Unlock()
	select {
	case <-n.done:
		return nil
	case <-ctx.Done():
		n.abortOnce.Do(func() {
			close(n.abort)
			n.cancel()
		})
		<-n.done
		return fmt.Errorf("notify: close before every notification was delivered: %w", ctx.Err())
	}
}

// Stats returns the counters so far.
func (n *Notifier) Stats() Stats {
	n.statsMu.Lock()
	defer n.statsMu.Unlock()
	return n.stats
}

func (n *Notifier) count(f func(*Stats)) {
	n.statsMu.Lock()
	f(&n.stats)
	n.statsMu.Unlock()
}

// delivery is one event on its way to one channel.
type delivery struct {
	event    Event
	channel  Configured
	attempts int
	due      time.Time
}

// run is the worker: it takes events from the queue and retries failed
// deliveries when they are due, until the queue is closed and drained.
func (n *Notifier) run() {
	defer close(n.done)
	defer n.cancel()
	var pending []*delivery // sorted by due
	queue := n.queue
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		if queue == nil {
			// Draining: each waiting retry gets its last attempt now.
			for i, d := range pending {
				select {
				case <-n.abort:
					n.dropPending(pending[i:])
					return
				default:
				}
				n.attempt(d, 0, true)
			}
			return
		}
		var due <-chan time.Time
		if len(pending) > 0 {
			timer.Reset(time.Until(pending[0].due))
			due = timer.C
		}
		select {
		case <-n.abort:
			n.dropPending(pending)
			return
		case e, ok := <-queue:
			if !ok {
				queue = nil
				continue
			}
			for _, c := range n.channels {
				if !c.Level.Admits(e.Level) {
					continue
				}
				if d := n.attempt(&delivery{event: e, channel: c}, len(pending), false); d != nil {
					pending = insertByDue(pending, d)
				}
			}
		case <-due:
			now := time.Now()
			for len(pending) > 0 && !pending[0].due.After(now) {
				d := pending[0]
				pending = pending[1:]
				if again := n.attempt(d, len(pending), false); again != nil {
					pending = insertByDue(pending, again)
				}
			}
		}
	}
}

// attempt sends d once. It returns d when it is to be retried, with its due
// time set; waiting is how many deliveries already wait for a retry, and
// draining says that no retry is possible any more.
func (n *Notifier) attempt(d *delivery, waiting int, draining bool) *delivery {
	ctx, cancel := context.WithTimeout(n.ctx, n.opts.SendTimeout)
	err := d.channel.Channel.Send(ctx, d.event)
	cancel()
	d.attempts++
	fields := append(eventFields(d.event), zap.String("channel", d.channel.Channel.Name()), zap.Int("attempt", d.attempts))
	if err == nil {
		n.count(func(s *Stats) { s.Sent++ })
		n.log.Info("notification sent", fields...)
		return nil
	}
	// Channels keep secrets out of their errors; the message is logged as
	// a string so that no wrapped value is ever formatted by the logger.
	fields = append(fields, zap.String("error", err.Error()))
	switch {
	case IsPermanent(err):
		n.count(func(s *Stats) { s.Failed++ })
		n.log.Error("notification refused by the receiver; not retried", fields...)
		return nil
	case d.attempts >= n.opts.MaxAttempts:
		n.count(func(s *Stats) { s.Failed++ })
		n.log.Error("notification failed; giving up", fields...)
		return nil
	case draining:
		n.count(func(s *Stats) { s.Failed++ })
		n.log.Error("notification failed while shutting down; giving up", fields...)
		return nil
	case waiting >= maxPendingRetries:
		n.count(func(s *Stats) { s.Dropped++ })
		n.log.Error("notification failed and too many are waiting for a retry; dropped", fields...)
		return nil
	}
	wait := n.opts.Backoff[min(d.attempts-1, len(n.opts.Backoff)-1)]
	d.due = time.Now().Add(wait)
	n.count(func(s *Stats) { s.Retried++ })
	n.log.Warn("notification failed; will retry", append(fields, zap.Duration("retry_in", wait))...)
	return d
}

// dropPending counts and logs the deliveries abandoned when Close gave up
// waiting, including events still in the queue.
func (n *Notifier) dropPending(pending []*delivery) {
	dropped := len(pending)
	for range n.queue { // closed by Close before abort
		dropped++
	}
	if dropped == 0 {
		return
	}
	n.count(func(s *Stats) { s.Dropped += uint64(dropped) })
	n.log.Error("notifications dropped at shutdown", zap.Int("count", dropped))
}

func insertByDue(pending []*delivery, d *delivery) []*delivery {
	i := sort.Search(len(pending), func(i int) bool { return pending[i].due.After(d.due) })
	pending = append(pending, nil)
	copy(pending[i+1:], pending[i:])
	pending[i] = d
	return pending
}

func eventFields(e Event) []zap.Field {
	f := []zap.Field{zap.String("kind", string(e.Kind)), zap.Stringer("level", e.Level)}
	if e.Cert != "" {
		f = append(f, zap.String("cert", e.Cert))
	}
	if e.UniqueID != "" {
		f = append(f, zap.String("unique_id", e.UniqueID))
	}
	return f
}
