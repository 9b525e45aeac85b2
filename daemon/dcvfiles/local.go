package dcvfiles

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/reseller"
)

// Local publishes validation files on this host alone.
type Local struct {
	responder *httpchallenge.Responder

	mu          sync.Mutex
	standalones map[string]*httpchallenge.Standalone
}

// NewLocal returns a publisher serving through responder (and the
// standalone listeners it starts on demand).
func NewLocal(responder *httpchallenge.Responder) *Local {
	return &Local{responder: responder, standalones: map[string]*httpchallenge.Standalone{}}
}

// Responder is the in-memory responder that serves the pending files.
func (l *Local) Responder() *httpchallenge.Responder { return l.responder }

// Standalone is the standalone responder listening on addr, made on first
// use.
func (l *Local) Standalone(addr string) *httpchallenge.Standalone {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.standalones[addr]
	if !ok {
		s = httpchallenge.NewStandalone(addr, l.responder)
		l.standalones[addr] = s
	}
	return s
}

// Close stops the standalone responders.
func (l *Local) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, s := range l.standalones {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// Publish writes o's files into every web root, recorded in o.Files, and
// serves them.
func (l *Local) Publish(ctx context.Context, cc *config.CertConfig, o *store.Order) error {
	for _, in := range o.Instructions {
		if in.File == nil {
			continue
		}
		if len(cc.Webroots) > 0 {
			ws, err := httpchallenge.Write(cc.Webroots, *in.File)
			if err != nil {
				return fmt.Errorf("write the validation file of %s: %w", in.Domain, err)
			}
			o.Files = MergeWritten(o.Files, ws)
		}
	}
	return l.Serve(ctx, cc, o)
}

// WriteNode writes o's files into cc's web roots, as a cluster node does
// for every order (the instructions, read from the shared database, are
// checked again first), and returns the files served and written.
func (l *Local) WriteNode(cc *config.CertConfig, o *store.Order) ([]reseller.FileInstruction, []httpchallenge.Written, error) {
	var (
		written []httpchallenge.Written
		served  []reseller.FileInstruction
	)
	for _, in := range o.Instructions {
		if in.File == nil {
			continue
		}
		served = append(served, *in.File)
		if err := reseller.CheckDCVFileName(in.File.FileName); err != nil {
			return nil, nil, fmt.Errorf("validation file of %s: %w", in.Domain, err)
		}
		if len(cc.Webroots) > 0 {
			ws, err := httpchallenge.Write(cc.Webroots, *in.File)
			if err != nil {
				return nil, nil, fmt.Errorf("write the validation file of %s: %w", in.Domain, err)
			}
			written = MergeWritten(written, ws)
		}
	}
	return served, written, nil
}

// Serve puts o's pending files into the in-memory responder (and a
// standalone listener when configured).
func (l *Local) Serve(ctx context.Context, cc *config.CertConfig, o *store.Order) error {
	if !servedStep(o.Step) {
		return nil
	}
	for _, in := range o.Instructions {
		if in.File == nil {
			continue
		}
		l.responder.Add(*in.File)
		if cc.Standalone != "" {
			if err := l.Standalone(cc.Standalone).Add(ctx, *in.File); err != nil {
				return fmt.Errorf("standalone responder %s: %w", cc.Standalone, err)
			}
		}
	}
	return nil
}

// WaitAcks returns at once: this process is the only one to serve.
func (l *Local) WaitAcks(context.Context, *store.Order) error { return nil }

// Remove removes o's files: see RemoveWith.
func (l *Local) Remove(cc *config.CertConfig, o *store.Order) error {
	return l.RemoveWith(cc, o, nil)
}

// RemoveWith removes o's files: those recorded in o.Files and also, those
// a crash may have written before they were recorded (the instruction says
// which name, the config which web roots), and the files in also.
func (l *Local) RemoveWith(cc *config.CertConfig, o *store.Order, also []httpchallenge.Written) error {
	var errs []error
	files := MergeWritten(slices.Clone(o.Files), also)
	for _, in := range o.Instructions {
		if in.File == nil {
			continue
		}
		for _, wr := range cc.Webroots {
			files = MergeWritten(files, []httpchallenge.Written{{Webroot: wr.Dir, Name: in.File.FileName, Content: in.File.Content}})
		}
		l.responder.Remove(*in.File)
		if cc.Standalone != "" {
			if err := l.Standalone(cc.Standalone).Remove(*in.File); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(files) > 0 {
		if err := httpchallenge.Remove(files); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Forget does nothing: what Local wrote is recorded in the order.
func (l *Local) Forget(string) {}
