package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/dcvfiles"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
)

// A Node is the file publisher of a cluster node (dcvfiles.Publisher):
// every node writes every pending order's files into its own web roots,
// and the driver waits until every live node has.
var _ dcvfiles.Publisher = (*Node)(nil)

// Publish writes o's validation files into this node's web roots and
// responder, and tells the cluster this node serves them. Safe to repeat.
// The files written are this node's, not the order's: o.Files stays as it
// is.
func (n *Node) Publish(ctx context.Context, cc *config.CertConfig, o *store.Order) error {
	n.writeMu.Lock()
	defer n.writeMu.Unlock()
	served, written, err := n.local.WriteNode(cc, o)
	if err != nil {
		return err
	}
	if err := n.local.Serve(ctx, cc, o); err != nil {
		return err
	}
	n.mu.Lock()
	n.files[o.UniqueID] = dcvfiles.MergeWritten(n.files[o.UniqueID], written)
	n.served[o.UniqueID] = served
	n.fileCerts[o.UniqueID] = o.Cert
	acked := n.acked[o.UniqueID]
	n.mu.Unlock()
	if acked {
		return nil
	}
	if err := n.store.AckFiles(ctx, o.UniqueID, n.node); err != nil {
		return fmt.Errorf("acknowledge the validation files: %w", err)
	}
	n.mu.Lock()
	n.acked[o.UniqueID] = true
	n.mu.Unlock()
	n.Announce(ctx, store.ClusterEvent{Kind: store.EventOrder, Cert: o.Cert, UniqueID: o.UniqueID})
	return nil
}

// Serve puts o's pending files back into this node's responders.
func (n *Node) Serve(ctx context.Context, cc *config.CertConfig, o *store.Order) error {
	return n.local.Serve(ctx, cc, o)
}

// Remove removes o's files: also those this node wrote for it.
func (n *Node) Remove(cc *config.CertConfig, o *store.Order) error {
	return n.local.RemoveWith(cc, o, n.written(o.UniqueID))
}

// written returns the validation files this node wrote for the order
// uniqueID.
func (n *Node) written(uniqueID string) []httpchallenge.Written {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.files[uniqueID])
}

// Forget drops what this node remembers of uniqueID's files, once they
// are removed.
func (n *Node) Forget(uniqueID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.files, uniqueID)
	delete(n.served, uniqueID)
	delete(n.fileCerts, uniqueID)
	delete(n.acked, uniqueID)
}

// removeNodeFiles removes the validation files this node wrote for an
// order that is no longer pending.
func (n *Node) removeNodeFiles(host Host, uniqueID string) {
	n.mu.Lock()
	files := slices.Clone(n.files[uniqueID])
	served := slices.Clone(n.served[uniqueID])
	cert := n.fileCerts[uniqueID]
	n.mu.Unlock()
	log := n.log.With(zap.String("cert", cert), zap.String("unique_id", uniqueID))
	var cc *config.CertConfig
	if got, err := host.CertConfig(cert); err == nil {
		cc = got
	}
	for _, f := range served {
		n.local.Responder().Remove(f)
		if cc == nil {
			continue
		}
		if cc.Standalone != "" {
			if err := n.local.Standalone(cc.Standalone).Remove(f); err != nil {
				log.Warn("stopping the standalone responder", zap.Error(err))
			}
		}
		// Also what an interrupted write may have left unrecorded.
		for _, wr := range cc.Webroots {
			files = dcvfiles.MergeWritten(files, []httpchallenge.Written{{Webroot: wr.Dir, Name: f.FileName, Content: f.Content}})
		}
	}
	if err := httpchallenge.Remove(files); err != nil {
		log.Warn("removing the validation files on this node", zap.Error(err))
		return
	}
	log.Info("validation files removed on this node", zap.Int("files", len(files)))
	n.Forget(uniqueID)
}

// WaitAcks waits until every node expected to serve o's validation
// files has acknowledged them: the CA may reach any of them. Expected is
// every node alive, by a heartbeat within the liveness window (the lease),
// whether or not it has acknowledged anything yet; that includes a node
// still starting, which registers before it reads the orders in flight
// (Run), and so one that joins while this waits. A node gone for good
// stops heartbeating and drops out of the window: it is waited for no
// longer than that. One that stays alive without acknowledging fails the
// step after AckWait, named, and the step is retried. For orders without
// files it returns at once.
func (n *Node) WaitAcks(ctx context.Context, o *store.Order) error {
	if !dcvfiles.Pending(o) {
		return nil
	}
	log := n.log.With(zap.String("cert", o.Cert), zap.String("unique_id", o.UniqueID))
	start := time.Now()
	deadline := start.Add(n.AckWait)
	wait := 100 * time.Millisecond
	logged := false
	for {
		missing, err := n.unacked(ctx, o)
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			if logged {
				log.Info("every live node serves the validation files", zap.Duration("waited", time.Since(start).Round(time.Millisecond)))
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("live %s did not acknowledge the validation files of order %s within %s (is certificate %s configured with its web roots on every node, and is dcvd there working?)",
				describeNodes(missing), o.UniqueID, n.AckWait, o.Cert)
		}
		if !logged && time.Since(start) >= time.Second {
			names := make([]string, len(missing))
			for i, m := range missing {
				names[i] = m.Name
			}
			log.Info("waiting for live nodes to serve the validation files", zap.Strings("nodes", names))
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// unacked are the live nodes that have not acknowledged o's files.
func (n *Node) unacked(ctx context.Context, o *store.Order) ([]store.Node, error) {
	nodes, err := n.store.Nodes(ctx, n.lease)
	if err != nil {
		return nil, fmt.Errorf("the nodes that must serve the validation files of order %s: %w", o.UniqueID, err)
	}
	acks, err := n.store.FileAcks(ctx, o.UniqueID) // its error names the order
	if err != nil {
		return nil, fmt.Errorf("the nodes that serve the validation files: %w", err)
	}
	var missing []store.Node
	for _, m := range nodes {
		if m.Alive && !slices.Contains(acks, m.Name) {
			missing = append(missing, m)
		}
	}
	return missing, nil
}

// describeNodes names nodes for an error, each with its last heartbeat
// (on the database's clock): "node n2 (last heartbeat …)".
func describeNodes(nodes []store.Node) string {
	var b strings.Builder
	b.WriteString("node")
	if len(nodes) > 1 {
		b.WriteString("s")
	}
	for i, m := range nodes {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %s (last heartbeat %s)", m.Name, m.Heartbeat.Format(time.RFC3339Nano))
	}
	return b.String()
}
