package config

// The tests of this file are those of the [store] section.

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// The [store] secrets of the tests: no error or warning may contain the
// DSN's password or the key, in any encoding.
const (
	testDSNPassword = "Pg-S3cret-pw"
	testDSN         = "postgres://dcvd:" + testDSNPassword + "@db1.example.net:5432/dcvd?sslmode=require"
	testStoreKeyRaw = "0123456789abcdef0123456789ABCDEF"
)

var (
	testStoreKeyB64 = base64.StdEncoding.EncodeToString([]byte(testStoreKeyRaw))
	testStoreKeyHex = hex.EncodeToString([]byte(testStoreKeyRaw))
)

// storeText is testBaseConfig with a [store] section of these lines.
func storeText(lines ...string) string {
	return testBaseConfig + "\n[store]\n" + strings.Join(lines, "\n") + "\n"
}

// checkNoStoreSecret fails when text holds a [store] secret of the tests.
func checkNoStoreSecret(t *testing.T, what, text string) {
	t.Helper()
	for _, secret := range []string{testDSNPassword, testStoreKeyRaw, testStoreKeyB64,
		strings.TrimRight(testStoreKeyB64, "="), testStoreKeyHex, fmt.Sprint([]byte(testStoreKeyRaw))} {
		if strings.Contains(text, secret) {
			t.Errorf("%s holds a secret (%q): %s", what, secret, text)
		}
	}
}

func TestConfigStore(t *testing.T) {
	pg := `driver = "postgres"`
	dsnFile := `dsn_file = "/etc/dcvd/store-dsn"`
	keyFile := `encryption_key_file = "/etc/dcvd/store-key"`
	key := []byte(testStoreKeyRaw)
	tests := []struct {
		name     string
		text     string
		hostname string // "" means web1.example.com
		want     StoreConfig
		// warns are the prefixes of the warnings about [store].
		warns []string
	}{
		{"no [store]", testBaseConfig, "", StoreConfig{Driver: "sqlite", Lease: time.Minute}, nil},
		{"sqlite", storeText(`driver = "sqlite"`), "", StoreConfig{Driver: "sqlite", Lease: time.Minute}, nil},
		{"empty [store]", storeText(), "", StoreConfig{Driver: "sqlite", Lease: time.Minute}, nil},
		{"postgres from files", storeText(pg, dsnFile, keyFile), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key}, nil},
		{"postgres from the environment, key as hex", storeText(pg, `dsn_env = "DCVD_STORE_DSN"`, `encryption_key_env = "DCVD_STORE_KEY"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key}, nil},
		{"inline DSN with a password", storeText(pg, `dsn = "`+testDSN+`"`, keyFile), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key},
			[]string{"store.dsn: a secret written in the config file"}},
		{"inline key=value DSN with a password", storeText(pg, `dsn = "host=db1 dbname=dcvd password=`+testDSNPassword+`"`, keyFile), "",
			StoreConfig{Driver: "postgres", DSN: "host=db1 dbname=dcvd password=" + testDSNPassword, Node: "web1", Lease: time.Minute, EncryptionKey: key},
			[]string{"store.dsn: a secret written in the config file"}},
		{"inline DSN without a password", storeText(pg, `dsn = " host=/run/postgresql dbname=dcvd user=dcvd "`, keyFile), "",
			StoreConfig{Driver: "postgres", DSN: "host=/run/postgresql dbname=dcvd user=dcvd", Node: "web1", Lease: time.Minute, EncryptionKey: key}, nil},
		{"inline URL without a password", storeText(pg, `dsn = "postgresql://dcvd@db1/dcvd"`, keyFile), "",
			StoreConfig{Driver: "postgres", DSN: "postgresql://dcvd@db1/dcvd", Node: "web1", Lease: time.Minute, EncryptionKey: key}, nil},
		{"inline key, unpadded base64 in white space", storeText(pg, dsnFile, `encryption_key = " `+strings.TrimRight(testStoreKeyB64, "=")+`\n"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key},
			[]string{"store.encryption_key: a secret written in the config file"}},
		{"inline key, upper-case hex", storeText(pg, dsnFile, `encryption_key = "`+strings.ToUpper(testStoreKeyHex)+`"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key},
			[]string{"store.encryption_key: a secret written in the config file"}},
		{"node and lease", storeText(pg, dsnFile, keyFile, `node = "Web-2.dc_1"`, `lease = "90s"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "Web-2.dc_1", Lease: 90 * time.Second, EncryptionKey: key}, nil},
		{"shortest lease, longest node", storeText(pg, dsnFile, keyFile, `node = "`+strings.Repeat("n", 63)+`"`, `lease = "2s"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: strings.Repeat("n", 63), Lease: 2 * time.Second, EncryptionKey: key}, nil},
		{"longest lease", storeText(pg, dsnFile, keyFile, `lease = "1h"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Hour, EncryptionKey: key}, nil},
		{"empty lease is the default", storeText(pg, dsnFile, keyFile, `lease = ""`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key}, nil},
		{"host name without a domain", storeText(pg, dsnFile, keyFile), "Backend_07",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "Backend_07", Lease: time.Minute, EncryptionKey: key}, nil},
		{"host name sanitised", storeText(pg, dsnFile, keyFile), "wéb 1:x.example.com",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "wb1x", Lease: time.Minute, EncryptionKey: key}, nil},
		{"long host name cut", storeText(pg, dsnFile, keyFile), strings.Repeat("h", 70) + ".example.com",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: strings.Repeat("h", 63), Lease: time.Minute, EncryptionKey: key}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testLoadOptions()
			if tt.hostname != "" {
				opts.Hostname = func() (string, error) { return tt.hostname, nil }
			}
			cfg, warns, err := parseConfig("test.toml", []byte(tt.text), opts)
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if !reflect.DeepEqual(cfg.Store, tt.want) {
				t.Errorf("store = %+v (dsn %v, key %v)\nwant %+v", cfg.Store, cfg.Store.DSN == tt.want.DSN,
					slices.Equal(cfg.Store.EncryptionKey, tt.want.EncryptionKey), tt.want)
			}
			var storeWarns []string
			for _, w := range warns {
				checkNoStoreSecret(t, "a warning", w)
				if strings.HasPrefix(w, "store") {
					storeWarns = append(storeWarns, w)
				}
			}
			if len(storeWarns) != len(tt.warns) {
				t.Fatalf("warnings %q, want %q", storeWarns, tt.warns)
			}
			for i, w := range tt.warns {
				if !strings.HasPrefix(storeWarns[i], w) {
					t.Errorf("warning %d = %q, want prefix %q", i, storeWarns[i], w)
				}
			}
			for _, s := range []string{fmt.Sprintf("%v", cfg.Store), fmt.Sprintf("%+v", cfg.Store), fmt.Sprintf("%#v", cfg.Store),
				fmt.Sprintf("%+v", *cfg), fmt.Sprintf("%v", cfg)} {
				checkNoStoreSecret(t, "the printed config", s)
			}
		})
	}
}

func TestConfigStoreBad(t *testing.T) {
	pg := `driver = "postgres"`
	dsnFile := `dsn_file = "/etc/dcvd/store-dsn"`
	keyFile := `encryption_key_file = "/etc/dcvd/store-key"`
	keyHelp := "openssl rand -base64 32"
	pw := testDSNPassword
	// unparsed is the error of a dsn that pgx cannot parse.
	unparsed := []string{`store.dsn: not a PostgreSQL connection string that parses`}
	tests := []struct {
		name     string
		text     string
		hostname func() (string, error) // nil means web1.example.com
		// want are "KEY: reason" prefixes, one per error, in sorted order.
		want []string
		// mention must be in the error text too.
		mention string
	}{
		{"[store] not a table", "store = \"postgres\"\n" + testBaseConfig, nil,
			[]string{"store: must be a table [store], not a string"}, ""},
		{"unknown key", storeText(`url = "x"`), nil,
			[]string{"store.url: unknown key (known here: driver, dsn, dsn_file, dsn_env, node, lease, encryption_key"}, ""},
		{"unknown driver", storeText(`driver = "mysql"`, dsnFile), nil,
			[]string{`store.driver: "mysql" is neither "sqlite" nor "postgres"`}, ""},
		{"driver not a string", storeText(`driver = 1`), nil,
			[]string{`store.driver: must be a string, not an integer`}, ""},
		{"sqlite with the postgres keys", storeText(`driver = "sqlite"`, `dsn = "`+testDSN+`"`, keyFile, `node = "web1"`, `lease = "1m"`), nil,
			[]string{`store.dsn: only with driver = "postgres" (with "sqlite", the state is in /var/lib/dcvd/dcvd.db)`,
				`store.encryption_key_file: only with driver = "postgres"`,
				`store.lease: only with driver = "postgres"`,
				`store.node: only with driver = "postgres"`}, ""},
		{"sqlite by default with a dsn", storeText(`dsn_env = "DCVD_STORE_DSN"`, `encryption_key = "x"`), nil,
			[]string{`store.dsn_env: only with driver = "postgres"`, `store.encryption_key: only with driver = "postgres"`}, ""},
		{"postgres without dsn and key", storeText(pg), nil,
			[]string{`store.dsn: required with driver = "postgres": set dsn_file`,
				`store.encryption_key: required with driver = "postgres"`}, keyHelp},
		{"dsn twice", storeText(pg, dsnFile, `dsn = "`+testDSN+`"`, keyFile), nil,
			[]string{`store.dsn: set more than once (store.dsn, store.dsn_file): keep one`}, ""},
		{"dsn file missing", storeText(pg, `dsn_file = "/etc/dcvd/nope"`, keyFile), nil,
			[]string{`store.dsn_file: cannot read the secret: open /etc/dcvd/nope`}, ""},
		{"dsn file empty", storeText(pg, `dsn_file = "/etc/dcvd/empty-secret"`, keyFile), nil,
			[]string{`store.dsn_file: file /etc/dcvd/empty-secret is empty`}, ""},
		{"dsn env unset", storeText(pg, `dsn_env = "NOPE"`, keyFile), nil,
			[]string{`store.dsn_env: environment variable NOPE is not set`}, ""},
		{"dsn empty", storeText(pg, `dsn = ""`, keyFile), nil,
			[]string{`store.dsn: must not be empty`}, ""},
		{"dsn blank", storeText(pg, `dsn = "  "`, keyFile), nil,
			[]string{`store.dsn: the connection string is blank`}, ""},
		{"dsn not a string", storeText(pg, `dsn = 5432`, keyFile), nil,
			[]string{`store.dsn: must be a string, not an integer`}, ""},
		{"URL with a bad escape in the password", storeText(pg, `dsn = "postgres://dcvd:`+pw+`%zz@db1/dcvd"`, keyFile), nil,
			[]string{`store.dsn: the postgres:// URL does not parse (not shown: it may hold a password); percent-encode`}, "%40"},
		{"URL with a password holding a slash", storeText(pg, `dsn = "postgresql://dcvd:`+pw+`/x@db1:5432/dcvd"`, keyFile), nil,
			[]string{`store.dsn: the postgres:// URL does not parse`}, "%2F"},
		{"URL with a bad port", storeText(pg, `dsn = "postgres://dcvd:`+pw+`@db1:99999/dcvd"`, keyFile), nil, unparsed, ""},
		{"URL with a bad sslmode", storeText(pg, `dsn = "postgres://dcvd:`+pw+`@db1/dcvd?sslmode=sometimes"`, keyFile), nil, unparsed, ""},
		{"URL with a bad pool parameter", storeText(pg, `dsn = "postgres://dcvd:`+pw+`@db1/dcvd?pool_max_conns=many"`, keyFile), nil, unparsed, ""},
		{"key=value with a bad port", storeText(pg, `dsn = "host=db1 password=`+pw+` port=abc"`, keyFile), nil, unparsed, ""},
		{"key=value with an open quote", storeText(pg, `dsn = "host=db1 password='`+pw+`"`, keyFile), nil, unparsed, ""},
		{"another database's URL", storeText(pg, `dsn_env = "MYSQL"`, keyFile), nil,
			[]string{`store.dsn_env: not a PostgreSQL connection string that parses`}, ""},
		{"key missing", storeText(pg, dsnFile), nil,
			[]string{`store.encryption_key: required with driver = "postgres", to seal the private keys`}, keyHelp},
		{"key twice", storeText(pg, dsnFile, keyFile, `encryption_key_env = "DCVD_STORE_KEY"`), nil,
			[]string{`store.encryption_key: set more than once (store.encryption_key_file, store.encryption_key_env)`}, ""},
		{"key file missing", storeText(pg, dsnFile, `encryption_key_file = "/etc/dcvd/no-key"`), nil,
			[]string{`store.encryption_key_file: cannot read the secret: open /etc/dcvd/no-key`}, ""},
		{"key file empty", storeText(pg, dsnFile, `encryption_key_file = "/etc/dcvd/empty-secret"`), nil,
			[]string{`store.encryption_key_file: file /etc/dcvd/empty-secret is empty`}, ""},
		{"key of 16 bytes", storeText(pg, dsnFile, `encryption_key_file = "/etc/dcvd/short-key"`), nil,
			[]string{`store.encryption_key_file: the key is 16 bytes once decoded from base64, not 32: must be 32 random bytes`}, keyHelp},
		{"key of 48 bytes", storeText(pg, dsnFile, `encryption_key_env = "LONG_KEY"`), nil,
			[]string{`store.encryption_key_env: the key is 48 bytes once decoded from base64, not 32`}, keyHelp},
		{"key of 32 hex digits", storeText(pg, dsnFile, `encryption_key = "`+testStoreKeyHex[:32]+`"`), nil,
			[]string{`store.encryption_key: the key is 32 hex digits, not 64`}, keyHelp},
		{"key of 65 hex digits", storeText(pg, dsnFile, `encryption_key = "`+testStoreKeyHex+`0"`), nil,
			[]string{`store.encryption_key: the key is 65 hex digits, not 64`}, keyHelp},
		{"key as URL-safe base64", storeText(pg, dsnFile, `encryption_key = "`+base64.URLEncoding.EncodeToString([]byte("\xfb\xff"+testStoreKeyRaw[2:]))+`"`), nil,
			[]string{`store.encryption_key: the key is neither base64 nor hex`}, keyHelp},
		{"key as a pass phrase", storeText(pg, dsnFile, `encryption_key = "correct horse battery staple"`), nil,
			[]string{`store.encryption_key: the key is neither base64 nor hex`}, keyHelp},
		{"key blank", storeText(pg, dsnFile, `encryption_key = " \t "`), nil,
			[]string{`store.encryption_key: the key is empty`}, keyHelp},
		{"bad node", storeText(pg, dsnFile, keyFile, `node = "web 1"`), nil,
			[]string{`store.node: "web 1" must be 1 to 63 characters of A-Z, a-z, 0-9, '.', '_' and '-'`}, ""},
		{"empty node", storeText(pg, dsnFile, keyFile, `node = ""`), nil,
			[]string{`store.node: "" must be 1 to 63 characters`}, ""},
		{"node too long", storeText(pg, dsnFile, keyFile, `node = "`+strings.Repeat("n", 64)+`"`), nil,
			[]string{`store.node: "` + strings.Repeat("n", 64) + `" must be 1 to 63 characters`}, ""},
		{"node not ASCII", storeText(pg, dsnFile, keyFile, `node = "wéb1"`), nil,
			[]string{`store.node: "wéb1" must be 1 to 63 characters`}, ""},
		{"node not a string", storeText(pg, dsnFile, keyFile, `node = 1`), nil,
			[]string{`store.node: must be a string, not an integer`}, ""},
		{"no host name", storeText(pg, dsnFile, keyFile), func() (string, error) { return "", errors.New("uname failed") },
			[]string{`store.node: cannot default to the host name (uname failed): set store.node`}, ""},
		{"unusable host name", storeText(pg, dsnFile, keyFile), func() (string, error) { return "ÿ ÿ.example.com", nil },
			[]string{`store.node: the host name "ÿ ÿ.example.com" leaves no usable node name: set store.node`}, ""},
		{"host name of a dot", storeText(pg, dsnFile, keyFile), func() (string, error) { return ".example.com", nil },
			[]string{`store.node: the host name ".example.com" leaves no usable node name: set store.node`}, ""},
		{"lease too short", storeText(pg, dsnFile, keyFile, `lease = "1500ms"`), nil,
			[]string{`store.lease: must be at least 2s`}, "1.5s"},
		{"lease too long", storeText(pg, dsnFile, keyFile, `lease = "1d"`), nil,
			[]string{`store.lease: must be at most 1h0m0s`}, "24h0m0s"},
		{"lease negative", storeText(pg, dsnFile, keyFile, `lease = "-1m"`), nil,
			[]string{`store.lease: must be positive`}, ""},
		{"lease not a duration", storeText(pg, dsnFile, keyFile, `lease = "a minute"`), nil,
			[]string{`store.lease: invalid duration "a minute"`}, ""},
		{"lease as a number", storeText(pg, dsnFile, keyFile, `lease = 60`), nil,
			[]string{`store.lease: must be a duration string`}, ""},
		{"everything at once", storeText(pg, `dsn = "postgres://dcvd:`+pw+`@db1:0x/dcvd"`, `encryption_key_file = "/etc/dcvd/short-key"`,
			`node = "a/b"`, `lease = "2h"`, `colour = "blue"`), nil,
			[]string{`store.colour: unknown key`, `store.dsn: `, `store.encryption_key_file: the key is 16 bytes`,
				`store.lease: must be at most`, `store.node: "a/b" must be`}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testLoadOptions()
			if tt.hostname != nil {
				opts.Hostname = tt.hostname
			}
			readFile := opts.ReadFile
			opts.ReadFile = func(name string) ([]byte, error) {
				if name == "/etc/dcvd/short-key" {
					return []byte(base64.StdEncoding.EncodeToString([]byte(testStoreKeyRaw[:16])) + "\n"), nil
				}
				return readFile(name)
			}
			lookupEnv := opts.LookupEnv
			opts.LookupEnv = func(name string) (string, bool) {
				switch name {
				case "MYSQL":
					return "mysql://dcvd:" + testDSNPassword + "@db1/dcvd", true
				case "LONG_KEY":
					return base64.StdEncoding.EncodeToString([]byte(testStoreKeyRaw + testStoreKeyRaw[:16])), true
				}
				return lookupEnv(name)
			}
			cfg, warns, err := parseConfig("test.toml", []byte(tt.text), opts)
			if err == nil {
				t.Fatalf("loaded: %+v", cfg.Store)
			}
			checkLoadErrors(t, cfg, err, tt.want)
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error does not mention %q: %v", tt.mention, err)
			}
			checkNoStoreSecret(t, "the error", err.Error())
			checkNoStoreSecret(t, "a warning", strings.Join(warns, "\n"))
		})
	}
}

// TestConfigStoreKeyEncodings: the base64 and hex forms of one key are the
// same key, and whatever is not exactly 32 bytes is refused.
func TestConfigStoreKeyEncodings(t *testing.T) {
	raw := make([]byte, StoreEncryptionKeySize)
	for i := range raw {
		raw[i] = byte(255 - i*7)
	}
	for _, in := range []string{
		base64.StdEncoding.EncodeToString(raw),
		base64.RawStdEncoding.EncodeToString(raw),
		base64.StdEncoding.EncodeToString(raw) + "\n",
		"\t" + hex.EncodeToString(raw) + "\r\n",
		strings.ToUpper(hex.EncodeToString(raw)),
	} {
		got, err := cfgDecodeStoreKey(in)
		if err != nil || !slices.Equal(got, raw) {
			t.Errorf("cfgDecodeStoreKey(%q) = %x, %v; want %x", in, got, err, raw)
		}
	}
	for _, in := range []string{
		"",
		base64.StdEncoding.EncodeToString(raw[:31]),
		base64.StdEncoding.EncodeToString(append(raw, 0)),
		hex.EncodeToString(raw[:31]),
		hex.EncodeToString(raw)[:63],
		base64.StdEncoding.EncodeToString(raw)[:43] + "==",
		base64.URLEncoding.EncodeToString(raw),
		"g" + hex.EncodeToString(raw)[1:],
	} {
		if got, err := cfgDecodeStoreKey(in); err == nil {
			t.Errorf("cfgDecodeStoreKey(%q) = %x, want an error", in, got)
		} else if in != "" && strings.Contains(err.Error(), strings.TrimSpace(in)) {
			t.Errorf("cfgDecodeStoreKey(%q): the error quotes the key: %v", in, err)
		}
	}
}
