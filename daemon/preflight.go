package daemon

import (
	"context"
	"slices"
	"strings"

	"github.com/dcvd/dcvd/daemon/config"
)

// This file holds the checks of the host that decide whether an order can
// get through once it is paid for: web roots dcvd can write validation
// files into, a deploy directory it can write the certificate to and that
// no web server serves, a state directory and key directory only dcvd can
// touch, a reload command that exists. They run in two places, from the
// same code so that they never drift: "dcvd check-config" (Config.Check),
// and the pre-flight check the daemon makes before every paid reissue
// (Daemon.preflight), where a refusal still costs nothing.
//
// They are cheap on purpose — a handful of system calls per web root, no
// network — because "dcvd reissue --all" makes one before each of
// thousands of reissues.

// PreflightError is the pre-flight check's refusal of a reissue: every
// problem found, each naming the configuration key concerned. Nothing was
// sent to the CA; the order stays at its first step, with the same
// unique_id, and goes ahead once the problems are mended.
type PreflightError struct {
	// Cert is the [[certificate]] whose reissue was held back.
	Cert string
	// Problems are sorted by key.
	Problems []*config.ConfigError
}

// Error lists every problem: "pre-flight check failed, nothing was sent
// to the CA: KEY: reason; KEY: reason".
func (e *PreflightError) Error() string {
	var b strings.Builder
	b.WriteString("pre-flight check failed, nothing was sent to the CA: ")
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems, so that errors.As finds each *ConfigError.
func (e *PreflightError) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// preflight checks, before the paid reissue of cc, what would otherwise
// fail only after it: the host checks of Config.Check for cc and, when the
// keys are files, for the state directory. It returns a *PreflightError
// listing every problem, or nil.
func (d *Daemon) preflight(ctx context.Context, cc *config.CertConfig) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cfg := d.config()
	// A Deployer whose Run is replaced (tests, the demo) never starts the
	// reload command's program: whether it exists is not a question then.
	h := config.NewHostChecks(d.deployer.Run == nil)
	var problems []*config.ConfigError
	if d.sealer == nil {
		// In a cluster the keys are sealed in the database, not written
		// to state_dir/keys.
		problems = append(problems, h.StateProblems(cfg.Daemon.StateDir)...)
	}
	// Only cc's own web roots are resolved for the deploy-directory check:
	// LoadConfig compared every certificate's paths as written, and
	// resolving every web root of the config before each of thousands of
	// reissues would not be cheap. Check resolves them all.
	problems = append(problems, h.CertProblems(cc, h.Webroots([]config.CertConfig{*cc}))...)
	if len(problems) == 0 {
		return nil
	}
	slices.SortStableFunc(problems, func(a, b *config.ConfigError) int { return strings.Compare(a.Key, b.Key) })
	return &PreflightError{Cert: cc.Name, Problems: problems}
}
