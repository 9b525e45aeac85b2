package renewal

import (
	"slices"
	"sync"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
)

// This file holds Index: every certificate's renewal inputs (its live
// certificate's summary and its recent history) kept in memory, ordered by
// when each configured certificate next needs a look, so that a renewal
// check touches only those.

// Index keeps the inputs of Next for every certificate (configured or not)
// and a min-heap of the configured ones by the time they next need a look:
// when Next says they are due, or when expiryWatch remains of their live
// certificate, whichever comes first. A certificate without a live
// certificate, one marked Stale (its inputs may be out of date) and one
// changed since the caller last looked (Pending) need a look at once.
//
// It is the caller's to keep it equal to the store: Build from one read of
// the store, then Put and AddAttempt after each write, MarkStale after a
// write whose outcome is unknown. It is safe for concurrent use.
type Index struct {
	mu      sync.Mutex
	built   bool
	entries map[string]*indexEntry
	heap    []*indexEntry // the configured entries, by key
	cfg     *config.Config
	watch   time.Duration
	// touched holds the names written between BeginBuild and Build:
	// what was read for them may be older than what was written.
	touched map[string]bool
}

type indexEntry struct {
	name    string
	live    *store.Certificate // a summary: no PEMs, no sealed key
	history []store.Attempt    // newest first, at most store.KeptAttempts
	cc      *config.CertConfig // nil when not configured
	order   int                // cc's place in the config
	key     time.Time          // when a look is needed
	pos     int                // in heap; -1 when not in it
	stale   bool               // the inputs must be read again
	pending bool               // changed since the caller last looked
	version uint64             // counts the changes
}

// Look is a certificate that needs a look, as the Index holds it: its
// config, its inputs (Live nil when it has none) and whether those must be
// read again (Stale). Version is handed back to Settle or Refresh.
type Look struct {
	CC      *config.CertConfig
	Live    *store.Certificate
	History []store.Attempt
	Stale   bool
	Version uint64
	order   int
}

// NewIndex is an empty Index, not built yet.
func NewIndex() *Index {
	return &Index{entries: map[string]*indexEntry{}}
}

// Built reports whether Build has been called.
func (x *Index) Built() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.built
}

// BeginBuild starts recording the writes made before Build: call it just
// before reading the store for Build.
func (x *Index) BeginBuild() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.touched = map[string]bool{}
}

// Build replaces the index by live (summaries of every live certificate)
// and history (the recent attempts of each certificate, newest first, as
// store.Reader.RecentAttempts returns them), configured by cfg. The
// certificates written since BeginBuild are marked stale. Nothing is
// pending after Build: the caller looks at every certificate then.
func (x *Index) Build(cfg *config.Config, live []*store.Certificate, history map[string][]store.Attempt) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.entries = make(map[string]*indexEntry, len(live)+len(cfg.Certificates))
	for _, c := range live {
		x.entry(c.Name).live = summary(c)
	}
	for name, h := range history {
		x.entry(name).history = recent(h)
	}
	for name := range x.touched {
		x.entry(name).stale = true
	}
	x.touched = nil
	x.built = true
	x.configure(cfg, false)
}

// Configure sets the configured certificates and the expiry watch from
// cfg, unless cfg is the one set already. Every configured certificate is
// then pending: a new config may change any decision.
func (x *Index) Configure(cfg *config.Config) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if cfg != x.cfg {
		x.configure(cfg, true)
	}
}

func (x *Index) configure(cfg *config.Config, pending bool) {
	x.cfg = cfg
	x.watch = 0
	for _, n := range cfg.Daemon.ExpiryAlertDays {
		x.watch = max(x.watch, time.Duration(n)*24*time.Hour)
	}
	for _, e := range x.entries {
		e.cc, e.pos, e.key = nil, -1, time.Time{}
	}
	x.heap = x.heap[:0]
	for i := range cfg.Certificates {
		cc := &cfg.Certificates[i]
		e := x.entry(cc.Name)
		if e.pos >= 0 {
			continue // a name given twice: the first is the one used
		}
		e.cc, e.order, e.pos = cc, i, len(x.heap)
		e.pending = e.pending || pending
		e.key = x.keyOf(e)
		x.heap = append(x.heap, e)
	}
	for i := len(x.heap)/2 - 1; i >= 0; i-- {
		x.down(i)
	}
}

// entry is the entry of name, made if need be. x.mu is held.
func (x *Index) entry(name string) *indexEntry {
	e := x.entries[name]
	if e == nil {
		e = &indexEntry{name: name, pos: -1}
		x.entries[name] = e
	}
	return e
}

// keyOf is when e next needs a look. x.mu is held.
func (x *Index) keyOf(e *indexEntry) time.Time {
	if e.stale || e.pending || e.live == nil || e.cc == nil {
		return time.Time{}
	}
	at := Next(e.cc, e.live, e.history, time.Time{}).At
	if !e.live.NotAfter.IsZero() {
		if watch := e.live.NotAfter.Add(-x.watch); watch.Before(at) {
			at = watch
		}
	}
	return at
}

// changed re-keys e after a change of its inputs or flags. x.mu is held.
func (x *Index) changed(e *indexEntry) {
	e.version++
	x.rekey(e)
}

func (x *Index) rekey(e *indexEntry) {
	e.key = x.keyOf(e)
	if e.pos >= 0 {
		x.fix(e.pos)
	}
}

// touch records a write of name before Build. x.mu is held.
func (x *Index) touch(name string) bool {
	if x.touched != nil {
		x.touched[name] = true
	}
	return x.built
}

// Put records c as the live certificate of c.Name (after a successful
// store.Writer.PutCertificate).
func (x *Index) Put(c *store.Certificate) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.touch(c.Name) {
		return
	}
	e := x.entry(c.Name)
	e.live, e.pending = summary(c), true
	x.changed(e)
}

// SetHistory records history (newest first, as store.Reader.Attempts
// returns it, at least store.KeptAttempts of it when there are so many)
// as the history of cert, read back after a successful
// store.Writer.AddAttempt.
func (x *Index) SetHistory(cert string, history []store.Attempt) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.touch(cert) {
		return
	}
	e := x.entry(cert)
	e.history, e.pending = recent(history), true
	x.changed(e)
}

// MarkStale says that the inputs of cert may differ from the store's (a
// write whose outcome is unknown): they are read again at the next look.
func (x *Index) MarkStale(cert string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.touch(cert) {
		return
	}
	e := x.entry(cert)
	e.stale, e.pending = true, true
	x.changed(e)
}

// Due appends to dst the configured certificates that need a look at now
// (their key is not after now), in the config's order, and returns it. It
// reads only those: O(due), and nothing allocated when dst has room.
func (x *Index) Due(now time.Time, dst []Look) []Look {
	x.mu.Lock()
	start := len(dst)
	dst = x.collect(0, now, dst)
	x.mu.Unlock()
	slices.SortFunc(dst[start:], func(a, b Look) int { return a.order - b.order })
	return dst
}

// collect walks the heap from i down the entries due at now.
func (x *Index) collect(i int, now time.Time, dst []Look) []Look {
	if i >= len(x.heap) || now.Before(x.heap[i].key) {
		return dst
	}
	e := x.heap[i]
	dst = append(dst, Look{CC: e.cc, Live: e.live, History: e.history, Stale: e.stale, Version: e.version, order: e.order})
	dst = x.collect(2*i+1, now, dst)
	return x.collect(2*i+2, now, dst)
}

// Settle says that the caller looked at l from the index's inputs: it is
// not pending any more, unless cert changed since Due returned it.
func (x *Index) Settle(l Look) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := x.entries[l.CC.Name]
	if e == nil || e.version != l.Version {
		return
	}
	e.pending = false
	x.rekey(e)
}

// Refresh records live (nil for none) and history, read from the store
// for l, unless its certificate changed since Due returned it; l is not
// pending nor stale any more then.
func (x *Index) Refresh(l Look, live *store.Certificate, history []store.Attempt) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := x.entries[l.CC.Name]
	if e == nil || e.version != l.Version {
		return
	}
	e.live, e.history = nil, recent(history)
	if live != nil {
		e.live = summary(live)
	}
	e.pending, e.stale = false, false
	x.changed(e)
}

// Inputs returns the inputs the index holds for name and when it next
// needs a look (the zero time for at once); ok is false when the index
// knows nothing of it, nor has it configured. For tests and status.
func (x *Index) Inputs(name string) (live *store.Certificate, history []store.Attempt, key time.Time, ok bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := x.entries[name]
	if e == nil {
		return nil, nil, time.Time{}, false
	}
	return e.live, e.history, e.key, true
}

// Names returns the names the index holds inputs for or has configured.
func (x *Index) Names() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	names := make([]string, 0, len(x.entries))
	for name, e := range x.entries {
		if e.live != nil || len(e.history) > 0 || e.cc != nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// summary is c without its bulk, as store.Reader.CertificateSummaries
// returns it; a copy, never shared with the caller.
func summary(c *store.Certificate) *store.Certificate {
	s := *c
	s.CertPEM, s.ChainPEM, s.KeySealed = "", "", ""
	s.Names = slices.Clone(c.Names)
	return &s
}

// recent is a copy of the newest store.KeptAttempts of history: all that
// Next reads (the failures in a row, which the backoff stops counting long
// before), and all that store.Writer.PruneHistory always keeps.
func recent(history []store.Attempt) []store.Attempt {
	if len(history) == 0 {
		return nil
	}
	return slices.Clone(history[:min(len(history), store.KeptAttempts)])
}

// fix restores the heap order after the key at i changed.
func (x *Index) fix(i int) {
	if !x.down(i) {
		x.up(i)
	}
}

func (x *Index) less(i, j int) bool { return x.heap[i].key.Before(x.heap[j].key) }

func (x *Index) swap(i, j int) {
	x.heap[i], x.heap[j] = x.heap[j], x.heap[i]
	x.heap[i].pos, x.heap[j].pos = i, j
}

func (x *Index) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !x.less(j, i) {
			break
		}
		x.swap(i, j)
		j = i
	}
}

func (x *Index) down(i0 int) bool {
	i, n := i0, len(x.heap)
	for {
		j := 2*i + 1
		if j >= n {
			break
		}
		if r := j + 1; r < n && x.less(r, j) {
			j = r
		}
		if !x.less(j, i) {
			break
		}
		x.swap(i, j)
		i = j
	}
	return i > i0
}
