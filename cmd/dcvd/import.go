package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/reseller"
)

// "dcvd import" takes over the orders an account already has: it lists
// them (the certificate list, every page) and writes one config fragment
// per chosen order into the include directory, and it may adopt the
// certificate and key already serving each (--adopt-from) by copying them
// into the deploy directory, which the daemon adopts at its first sweep
// instead of paying for a reissue. It only reads from the API: nothing it
// does can cost money.

// importFragmentMode: fragments are read by dcvd (its group) and written by
// root, like the main file.
const importFragmentMode = 0o640

// importDefaultDeployRoot is where the fragments' deploy directories go,
// one per certificate (the directory check-config suggests).
const importDefaultDeployRoot = "/etc/ssl/dcvd"

// importPlaceholder is the value check-config refuses until it is
// replaced: no [dns.CHANGE-ME] section exists.
const importPlaceholder = "CHANGE-ME"

type importOptions struct {
	cfgPath, serviceIDs, dir, adoptFrom, deployRoot string
	all, dryRun, force                              bool
}

func runImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := commandFlags("import",
		"import [--config FILE] [--service-id A,B | --all] [--dir DIR] [--adopt-from DIR] [--deploy-root DIR] [--dry-run] [--force]", stdout)
	var o importOptions
	fs.StringVar(&o.serviceIDs, "service-id", "", "write fragments for these services (comma-separated service_ids)")
	fs.BoolVar(&o.all, "all", false, "write fragments for every service of the account not configured yet")
	fs.StringVar(&o.dir, "dir", "", "where to write the fragments (default: the directory of the config's first include pattern, else conf.d next to it)")
	fs.StringVar(&o.adoptFrom, "adopt-from", "", "adopt the certificates and keys found in DIR/NAME/ or DIR/DOMAIN/ (or DIR itself for one service): fullchain.pem+privkey.pem, cert.pem[+chain.pem]+privkey.pem, or NAME.crt+NAME.key")
	fs.StringVar(&o.deployRoot, "deploy-root", importDefaultDeployRoot, "each certificate's deploy.dir is DIR/NAME")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the fragments and what would be adopted; write nothing")
	fs.BoolVar(&o.force, "force", false, "rewrite a fragment that already exists for a chosen service")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return asUsage(fmt.Errorf("unexpected arguments %v", fs.Args()))
	}
	if o.all && o.serviceIDs != "" {
		fs.Usage()
		return asUsage(errors.New("--service-id and --all exclude each other"))
	}
	if !filepath.IsAbs(o.deployRoot) {
		return asUsage(fmt.Errorf("--deploy-root %q must be an absolute path", o.deployRoot))
	}
	o.cfgPath = *cfgPath
	return importRun(ctx, o, stdout, stderr)
}

// importConfig loads the configuration for import: the whole of it when
// it loads, else the main file alone (a fragment written by an earlier
// import may still wait for its DNS provider or web root, which must not
// keep the next import from reaching the API).
func importConfig(path string, stderr io.Writer) (*config.Config, error) {
	cfg, warnings, err := config.LoadConfig(path, config.LoadOptions{})
	if err == nil {
		for _, w := range warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		return cfg, nil
	}
	main, _, mainErr := config.LoadConfig(path, config.LoadOptions{SkipIncludes: true})
	if mainErr != nil {
		return nil, asConfig(fmt.Errorf("config %s:\n%w", path, err))
	}
	fmt.Fprintf(stderr, "note: the included files have problems (dcvd check-config lists them); importing with the main file's [api]\n")
	return main, nil
}

// configured is a service_id already in the configuration.
type configured struct{ name, file string }

// importConfigured finds the service_ids and certificate names already
// configured: the main file's, and those of every file the include
// patterns match, read loosely (a fragment may not load yet).
func importConfigured(cfg *config.Config) (byService map[string]configured, names map[string]bool) {
	byService, names = map[string]configured{}, map[string]bool{}
	for _, cc := range cfg.Certificates {
		byService[cc.ServiceID] = configured{cc.Name, cfg.CertFile[cc.Name]}
		names[cc.Name] = true
	}
	for _, p := range cfg.Include {
		files, _ := filepath.Glob(p)
		for _, f := range files {
			var frag struct {
				Certificate []struct {
					Name      string `toml:"name"`
					ServiceID string `toml:"service_id"`
				} `toml:"certificate"`
			}
			if _, err := toml.DecodeFile(f, &frag); err != nil {
				continue
			}
			for _, c := range frag.Certificate {
				if _, ok := byService[c.ServiceID]; !ok && c.ServiceID != "" {
					byService[c.ServiceID] = configured{c.Name, f}
				}
				names[c.Name] = true
			}
		}
	}
	return byService, names
}

func importRun(ctx context.Context, o importOptions, stdout, stderr io.Writer) error {
	cfg, err := importConfig(o.cfgPath, stderr)
	if err != nil {
		return err
	}
	client, err := reseller.New(reseller.Config{
		BaseURL: cfg.API.BaseURL, AccessKeyID: cfg.API.AccessKeyID, AccessKeySecret: cfg.API.AccessKeySecret,
		Timeout: cfg.API.Timeout, MaxRequestsPerSecond: cfg.API.MaxRequestsPerSecond, UserAgent: "dcvd/" + version,
	})
	if err != nil {
		return asConfig(fmt.Errorf("config %s: [api]: %w", o.cfgPath, err))
	}
	services, err := client.ListAll(ctx, "")
	if err != nil {
		return fmt.Errorf("reading the account's certificate list: %w", err)
	}
	byService, names := importConfigured(cfg)
	importTable(stdout, services, byService)

	chosen, err := importChoose(o, services)
	if err != nil || chosen == nil {
		return err
	}
	dir := o.dir
	if dir == "" {
		dir = cfg.IncludeDir()
	}
	if !o.dryRun && len(cfg.Include) == 0 {
		fmt.Fprintf(stderr, "note: %s has no include key: add include = [%q] at its top, or the fragments are not read\n",
			o.cfgPath, filepath.Join(dir, "*.toml"))
	}
	plans, notes, err := importPlan(o, cfg, dir, chosen, byService, names)
	for _, n := range notes {
		fmt.Fprintln(stderr, "note:", n)
	}
	if err != nil {
		return err
	}
	if len(plans) == 0 {
		fmt.Fprintln(stdout, "nothing to import")
		return nil
	}
	if o.dryRun {
		for _, p := range plans {
			fmt.Fprintf(stdout, "\n# --- %s (not written: --dry-run) ---\n%s", p.file, p.text)
		}
	} else {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		for _, p := range plans {
			if err := importWrite(p.file, p.text); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s (certificate %s, service %s)\n", p.file, p.name, p.svc.ServiceID)
		}
	}
	if o.adoptFrom == "" {
		fmt.Fprintf(stdout, "next: complete the CHANGE-ME lines, then dcvd check-config --config %s\n", o.cfgPath)
		return nil
	}
	var failed []string
	for _, p := range plans {
		msg, err := importAdopt(ctx, o, p, len(plans) == 1)
		switch {
		case err != nil:
			failed = append(failed, p.name)
			fmt.Fprintf(stderr, "not adopted: %s: %v\n", p.name, err)
		case msg != "":
			fmt.Fprintf(stdout, "%s: %s\n", p.name, msg)
		}
	}
	fmt.Fprintf(stdout, "next: complete the CHANGE-ME lines, then dcvd check-config --config %s\n", o.cfgPath)
	if len(failed) > 0 {
		return fmt.Errorf("%d certificate(s) not adopted (%s): the daemon would reissue them at its first run; fix what is said above or remove their fragments", len(failed), strings.Join(failed, ", "))
	}
	return nil
}

// importTable prints the account's services.
func importTable(w io.Writer, services []reseller.Service, byService map[string]configured) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE_ID\tDOMAINS\tPRODUCT\tSTATUS\tCERT EXPIRES\tSERVICE ENDS\tCONFIGURED AS")
	day := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Local().Format(time.DateOnly)
	}
	for _, s := range services {
		domains := s.Domains()
		shown := strings.Join(domains, ",")
		if len(domains) > 3 {
			shown = strings.Join(domains[:3], ",") + fmt.Sprintf(",(+%d)", len(domains)-3)
		}
		as := "-"
		if c, ok := byService[s.ServiceID]; ok {
			as = c.name
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ServiceID, importDash(shown), importDash(s.ProductName), importDash(s.Status),
			day(s.CertExpiresAt), day(s.ServiceExpiresAt), as)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d service(s)\n", len(services))
}

func importDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// importChoose returns the services the command line chose; nil when it
// chose none (the table is all that was asked for).
func importChoose(o importOptions, services []reseller.Service) ([]reseller.Service, error) {
	if o.all {
		return services, nil
	}
	if o.serviceIDs == "" {
		return nil, nil
	}
	var out []reseller.Service
	var unknown []string
	for _, id := range strings.Split(o.serviceIDs, ",") {
		id = strings.TrimSpace(id)
		if id == "" {
			continue
		}
		i := slices.IndexFunc(services, func(s reseller.Service) bool { return s.ServiceID == id })
		if i < 0 {
			unknown = append(unknown, id)
			continue
		}
		if !slices.ContainsFunc(out, func(s reseller.Service) bool { return s.ServiceID == id }) {
			out = append(out, services[i])
		}
	}
	if len(unknown) > 0 {
		return nil, asUsage(fmt.Errorf("--service-id: %s not in the account's certificate list (listed above)", strings.Join(unknown, ", ")))
	}
	if len(out) == 0 {
		return nil, asUsage(errors.New("--service-id names no service"))
	}
	return out, nil
}

// importPlanned is one fragment to write.
type importPlanned struct {
	svc              reseller.Service
	name, file, text string
	deployDir        string
}

// importPlan decides every fragment before any is written, so that a
// refusal leaves the directory as it was.
func importPlan(o importOptions, cfg *config.Config, dir string, chosen []reseller.Service,
	byService map[string]configured, names map[string]bool) ([]importPlanned, []string, error) {
	var plans []importPlanned
	var notes, refused []string
	now := time.Now()
	for _, s := range chosen {
		if len(s.DomainDCV) == 0 {
			notes = append(notes, fmt.Sprintf("service %s: the list shows no domains (no order was made with it yet): write its [[certificate]] by hand", s.ServiceID))
			continue
		}
		if !s.ServiceExpiresAt.IsZero() && !now.Before(s.ServiceExpiresAt) {
			notes = append(notes, fmt.Sprintf("service %s: its paid period ended on %s, no reissue is possible: skipped (buy a renewal and import its new service)",
				s.ServiceID, s.ServiceExpiresAt.Local().Format(time.DateOnly)))
			continue
		}
		name := ""
		if c, ok := byService[s.ServiceID]; ok {
			if c.file == "" || filepath.Dir(c.file) != filepath.Clean(dir) {
				where := c.file
				if where == "" {
					where = o.cfgPath
				}
				notes = append(notes, fmt.Sprintf("service %s: already configured as certificate %s in %s: skipped", s.ServiceID, c.name, where))
				continue
			}
			if !o.force {
				refused = append(refused, fmt.Sprintf("service %s is already configured in %s (certificate %s): left as is; --force rewrites it", s.ServiceID, c.file, c.name))
				continue
			}
			name = c.name
		}
		if name == "" {
			name = importUniqueName(importName(s.Domains()), func(n string) bool {
				if names[n] {
					return true
				}
				_, err := os.Lstat(filepath.Join(dir, n+".toml"))
				return err == nil
			})
			names[name] = true
		}
		file := filepath.Join(dir, name+".toml")
		if _, err := os.Lstat(file); err == nil && !o.force {
			refused = append(refused, fmt.Sprintf("%s already exists: left as is; --force overwrites it", file))
			continue
		}
		deployDir := filepath.Join(o.deployRoot, name)
		plans = append(plans, importPlanned{svc: s, name: name, file: file, deployDir: deployDir,
			text: importFragment(s, name, deployDir, cfg, now)})
	}
	if len(refused) > 0 {
		return nil, notes, fmt.Errorf("nothing written:\n  %s", strings.Join(refused, "\n  "))
	}
	return plans, notes, nil
}

// importName derives a certificate name from the service's domains: the
// first one, without a wildcard label, made of the characters a name may
// hold ([a-z0-9][a-z0-9._-]*, at most 64).
func importName(domains []string) string {
	first := ""
	if len(domains) > 0 {
		first = strings.TrimPrefix(strings.ToLower(domains[0]), "*.")
	}
	b := []byte(strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '-'
	}, first))
	s := strings.TrimLeft(string(b), "._-")
	if len(s) > 56 { // room for a "-N" suffix within 64
		s = strings.TrimRight(s[:56], "._-")
	}
	if s == "" {
		s = "cert"
	}
	return s
}

// importUniqueName is name, or name-2, name-3… when taken.
func importUniqueName(name string, taken func(string) bool) string {
	if !taken(name) {
		return name
	}
	for i := 2; ; i++ {
		if n := fmt.Sprintf("%s-%d", name, i); !taken(n) {
			return n
		}
	}
}

// importFragment writes the fragment of one service. The DCV methods are
// those of the service's last order; what dcvd cannot know (the DNS
// provider, the web root) is left for the admin, in a form check-config
// refuses until it is done.
func importFragment(s reseller.Service, name, deployDir string, cfg *config.Config, now time.Time) string {
	var b strings.Builder
	day := func(t time.Time) string {
		if t.IsZero() {
			return "unknown"
		}
		return t.Local().Format(time.DateOnly)
	}
	fmt.Fprintf(&b, "# Written by \"dcvd import\" on %s from the account's certificate list:\n", now.Local().Format(time.DateOnly))
	fmt.Fprintf(&b, "# service %s, %s, status %s, certificate expires %s, service ends %s.\n",
		s.ServiceID, importDash(s.ProductName), importDash(s.Status), day(s.CertExpiresAt), day(s.ServiceExpiresAt))
	b.WriteString("# Complete the CHANGE-ME lines, then run dcvd check-config and reload dcvd.\n\n")
	b.WriteString("[[certificate]]\n")
	fmt.Fprintf(&b, "name = %s\nservice_id = %s\n", tomlString(name), tomlString(s.ServiceID))

	methods := map[string]string{}
	var dnsNames, httpNames, guessed []string
	for _, d := range s.Domains() {
		m := strings.ToLower(strings.TrimSpace(s.DomainDCV[d]))
		if m == "" {
			// The list names the domain without its method: dns works
			// for every name, wildcards included.
			m = reseller.MethodDNS
			guessed = append(guessed, d)
		}
		methods[d] = m
		switch m {
		case reseller.MethodDNS:
			dnsNames = append(dnsNames, d)
		case reseller.MethodHTTP, reseller.MethodHTTPS:
			httpNames = append(httpNames, d)
		}
	}
	if len(dnsNames) > 0 {
		provider := importPlaceholder
		b.WriteString("# The [dns.NAME] section (in the main file or a file of this directory)\n")
		fmt.Fprintf(&b, "# that publishes the validation records of %s.\n", strings.Join(dnsNames, ", "))
		if len(cfg.DNS) == 1 {
			for n := range cfg.DNS {
				provider = n
			}
			b.WriteString("# The configuration has one DNS provider: it is named here; check it serves these zones.\n")
		} else {
			fmt.Fprintf(&b, "# check-config refuses %s; configured providers: %s.\n", importPlaceholder, importProviders(cfg))
		}
		fmt.Fprintf(&b, "dns = %s\n", tomlString(provider))
	}
	if len(httpNames) > 0 {
		fmt.Fprintf(&b, "# %s are validated over http: set the document root that serves\n", strings.Join(httpNames, ", "))
		b.WriteString("# http://NAME/.well-known/pki-validation/ for each of them (or standalone, or\n")
		b.WriteString("# daemon.http_listen in the main file). Until then check-config refuses this\n")
		b.WriteString("# file: \"webroot: required by the http/https-validated names\".\n")
		fmt.Fprintf(&b, "# webroot = \"/var/www/%s\"\n", importPlaceholder)
	}
	if len(guessed) > 0 {
		fmt.Fprintf(&b, "# The list did not say how %s were validated: dns is assumed.\n", strings.Join(guessed, ", "))
	}
	b.WriteString("\n[certificate.domains]\n")
	for _, d := range s.Domains() {
		fmt.Fprintf(&b, "%s = %s\n", tomlString(d), tomlString(methods[d]))
	}
	b.WriteString("\n[certificate.deploy]\n")
	b.WriteString("# cert.pem, chain.pem, fullchain.pem and privkey.pem go here; a certificate\n")
	b.WriteString("# already here when dcvd first runs is adopted, not paid for again.\n")
	fmt.Fprintf(&b, "dir = %s\n", tomlString(deployDir))
	b.WriteString("# reload = \"systemctl reload nginx\"\n")
	return b.String()
}

func importProviders(cfg *config.Config) string {
	if len(cfg.DNS) == 0 {
		return "none yet"
	}
	var names []string
	for n := range cfg.DNS {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// importWrite writes a fragment with mode 0640 through a temporary file,
// so that a daemon reloading meanwhile never reads half of it.
// importServiceOwner is, when import runs as root on a host where dcvd is
// installed as a service (its user exists), that user's uid and gid: the
// service reads the fragments (root:dcvd 0640, as the main config) and
// replaces the adopted files at each renewal (its deploy directories are
// its own, as the daemon would have made them). ok is false otherwise:
// what import writes then belongs to whoever runs it.
func importServiceOwner() (uid, gid int, ok bool) {
	if os.Geteuid() != 0 {
		return 0, 0, false
	}
	u, err := user.Lookup(serviceUser)
	if err != nil {
		return 0, 0, false
	}
	uid, errU := strconv.Atoi(u.Uid)
	gid, errG := strconv.Atoi(u.Gid)
	return uid, gid, errU == nil && errG == nil
}

// importGiveToService gives path, and everything under it, to the
// service's user (importServiceOwner): owner and group when owner is true,
// else the group alone (a fragment stays root's, readable by the group).
func importGiveToService(path string, owner bool) error {
	uid, gid, ok := importServiceOwner()
	if !ok {
		return nil
	}
	if !owner {
		uid = -1
	}
	return filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("give %s to the service's user %s: %w", p, serviceUser, err)
		}
		return nil
	})
}

func importWrite(file, text string) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".dcvd-import-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(text); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := tmp.Chmod(importFragmentMode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := importGiveToService(tmp.Name(), false); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

// importFound is a certificate and key found for adoption.
type importFound struct {
	certFile, keyFile string
	certPEM, chainPEM string
	keyPEM            string
}

// importFind looks for a certificate and its key in the places
// --adopt-from may hold them: DIR/NAME/, DIR/DOMAIN/ (certbot's
// live/DOMAIN/), or DIR itself when one service is imported.
func importFind(root string, p importPlanned, single bool) (*importFound, error) {
	dirs := []string{filepath.Join(root, p.name)}
	for _, d := range p.svc.Domains() {
		dirs = append(dirs, filepath.Join(root, strings.TrimPrefix(d, "*.")))
	}
	if single {
		dirs = append(dirs, root)
	}
	for _, dir := range dirs {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		bases := []string{p.name}
		for _, d := range p.svc.Domains() {
			bases = append(bases, strings.TrimPrefix(d, "*."))
		}
		type pair struct{ cert, chain, key string }
		pairs := []pair{{"fullchain.pem", "", "privkey.pem"}, {"cert.pem", "chain.pem", "privkey.pem"}}
		for _, base := range bases {
			pairs = append(pairs, pair{base + ".crt", "", base + ".key"}, pair{base + ".pem", "", base + ".key"})
		}
		for _, pr := range pairs {
			cert, err := os.ReadFile(filepath.Join(dir, pr.cert))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			key, err := os.ReadFile(filepath.Join(dir, pr.key))
			if err != nil {
				return nil, fmt.Errorf("%s has no key next to it: %w", filepath.Join(dir, pr.cert), err)
			}
			f := &importFound{certFile: filepath.Join(dir, pr.cert), keyFile: filepath.Join(dir, pr.key), keyPEM: string(key)}
			if f.certPEM, f.chainPEM, err = importSplit(string(cert)); err != nil {
				return nil, fmt.Errorf("%s: %w", f.certFile, err)
			}
			if pr.chain != "" {
				if chain, err := os.ReadFile(filepath.Join(dir, pr.chain)); err == nil && f.chainPEM == "" {
					f.chainPEM = string(chain)
				}
			}
			return f, nil
		}
	}
	return nil, nil
}

// importSplit splits a PEM bundle into its first certificate (the leaf)
// and the rest (the chain).
func importSplit(bundle string) (leaf, chain string, err error) {
	rest := []byte(bundle)
	var blocks []*pem.Block
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			blocks = append(blocks, b)
		}
	}
	if len(blocks) == 0 {
		return "", "", errors.New("no PEM certificate in it")
	}
	leaf = string(pem.EncodeToMemory(blocks[0]))
	for _, b := range blocks[1:] {
		chain += string(pem.EncodeToMemory(b))
	}
	return leaf, chain, nil
}

// importAdopt copies the certificate found for p into its deploy
// directory, in dcvd's layout, after checking it is worth adopting: the
// key is the certificate's, the certificate covers every domain of the
// service, and it has not expired. It returns what was done, or "" when
// nothing was found.
func importAdopt(ctx context.Context, o importOptions, p importPlanned, single bool) (string, error) {
	f, err := importFind(o.adoptFrom, p, single)
	if err != nil {
		return "", err
	}
	if f == nil {
		return fmt.Sprintf("no certificate found for it in %s (looked in %s/, and for each domain): the first run reissues it",
			o.adoptFrom, filepath.Join(o.adoptFrom, p.name)), nil
	}
	if _, err := tls.X509KeyPair([]byte(f.certPEM), []byte(f.keyPEM)); err != nil {
		return "", fmt.Errorf("%s does not go with %s: %v", f.keyFile, f.certFile, err)
	}
	block, _ := pem.Decode([]byte(f.certPEM))
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("%s: %w", f.certFile, err)
	}
	have := map[string]bool{}
	for _, n := range leaf.DNSNames {
		have[strings.ToLower(n)] = true
	}
	var missing []string
	for _, d := range p.svc.Domains() {
		if n, err := reseller.NormalizeDomain(d); err != nil || !have[n] {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("%s does not cover %s of service %s (it covers %s)", f.certFile, strings.Join(missing, ", "),
			p.svc.ServiceID, strings.Join(leaf.DNSNames, ", "))
	}
	if !time.Now().Before(leaf.NotAfter) {
		return "", fmt.Errorf("%s expired on %s", f.certFile, leaf.NotAfter.Local().Format(time.DateOnly))
	}
	spec := deploy.Spec{Dir: p.deployDir}
	if _, err := os.Stat(spec.CertPath()); err == nil {
		return fmt.Sprintf("%s already holds a certificate: left as is (the daemon adopts it)", p.deployDir), nil
	}
	what := fmt.Sprintf("%s (serial %X, expires %s)", f.certFile, leaf.SerialNumber, leaf.NotAfter.Local().Format(time.DateOnly))
	if o.dryRun {
		return "would adopt " + what + " into " + p.deployDir, nil
	}
	b := deploy.Bundle{Cert: p.name, CertPEM: f.certPEM, ChainPEM: f.chainPEM, KeyPEM: f.keyPEM,
		Names: leaf.DNSNames, NotAfter: leaf.NotAfter}
	if err := (&deploy.Deployer{}).Install(ctx, spec, b); err != nil {
		return "", err
	}
	if err := importGiveToService(p.deployDir, true); err != nil {
		return "", err
	}
	return "adopted " + what + " into " + p.deployDir + ": the first run takes it over without a reissue", nil
}
