package providers

import (
	"context"
	"fmt"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/libdns/acmedns"
	"github.com/libdns/alidns"
	"github.com/libdns/azure"
	"github.com/libdns/bunny"
	"github.com/libdns/cloudflare"
	"github.com/libdns/desec"
	"github.com/libdns/digitalocean"
	"github.com/libdns/gandi"
	"github.com/libdns/godaddy"
	"github.com/libdns/googleclouddns"
	"github.com/libdns/hetzner"
	"github.com/libdns/libdns"
	"github.com/libdns/linode"
	"github.com/libdns/namecheap"
	"github.com/libdns/ovh"
	"github.com/libdns/porkbun"
	"github.com/libdns/powerdns"
	"github.com/libdns/rfc2136"
	"github.com/libdns/route53"
	"github.com/libdns/vultr/v2"
)

// Provider is what dcvd needs of a DNS provider: read, set and delete
// records in a zone. Every libdns provider in the registry satisfies it; a
// provider that also implements libdns.ZoneLister is asked for its zones.
//
// Implementations must be safe for concurrent use and honour the context.
type Provider interface {
	libdns.RecordGetter
	libdns.RecordSetter
	libdns.RecordDeleter
}

// Kind describes one provider type that a [dns.NAME] section can name.
//
// A provider's config keys are the JSON names of its libdns struct's fields
// (snake_case field names where the struct has no JSON tags), so the keys
// are those of the provider's own documentation and of Caddy's.
type Kind struct {
	// Name is the value of the section's provider key.
	Name string
	// New returns a pointer to a zero provider struct; its exported string,
	// bool, integer and duration fields become config keys.
	New func() Provider
	// Required lists the keys that must be set (inline, *_file or *_env).
	Required []string
	// Secret lists the keys that hold credentials. They are never logged,
	// and setting one inline draws a warning: use key_file or key_env.
	Secret []string
	// About is one line for the README and "dcvd dns providers".
	About string
	// SetUnsafe marks a provider whose SetRecords may change records other
	// than the ones given. dcvd then creates records with AppendRecords and
	// replaces a stale one by deleting it (as listed, by ID) first.
	SetUnsafe bool
	// Check, when set, validates the configured provider before first use,
	// for providers that would otherwise fail in a worse way later.
	Check func(Provider) error
}

// kinds is the registry. Adding a provider is one entry here (plus its
// module in go.mod at a version that builds with libdns v1).
var kinds = []Kind{
	{Name: "acmedns", New: func() Provider { return new(acmedns.Provider) },
		Required: []string{"username", "password", "subdomain", "server_url"}, Secret: []string{"password"},
		About: "an acme-dns server; publish a CNAME from the DCV name to its subdomain once by hand"},
	{Name: "alidns", New: func() Provider { return new(alidns.Provider) },
		Required: []string{"access_key_id", "access_key_secret"}, Secret: []string{"access_key_secret", "security_token"},
		// Its SetRecords finds the record to replace by a substring search
		// of names and values, so it can rewrite another DCV record.
		SetUnsafe: true,
		About:     "Alibaba Cloud DNS (阿里云解析)"},
	{Name: "azure", New: func() Provider { return new(azure.Provider) },
		Required: []string{"subscription_id", "resource_group_name"}, Secret: []string{"client_secret"},
		About: "Azure DNS (client credentials, or the host's managed identity when they are empty)"},
	{Name: "bunny", New: func() Provider { return new(bunny.Provider) },
		Required: []string{"access_key"}, Secret: []string{"access_key"},
		About: "bunny.net DNS"},
	{Name: "cloudflare", New: func() Provider { return new(cloudflare.Provider) },
		Required: []string{"api_token"}, Secret: []string{"api_token", "zone_token"},
		About: "Cloudflare (API token with Zone.DNS:Edit; zone_token with Zone:Read when api_token is scoped to one zone)"},
	{Name: "desec", New: func() Provider { return new(desec.Provider) },
		Required: []string{"token"}, Secret: []string{"token"},
		About: "deSEC"},
	{Name: "digitalocean", New: func() Provider { return new(digitalocean.Provider) },
		Required: []string{"auth_token"}, Secret: []string{"auth_token"},
		About: "DigitalOcean DNS"},
	{Name: "gandi", New: func() Provider { return new(gandi.Provider) },
		Required: []string{"bearer_token"}, Secret: []string{"bearer_token"},
		About: "Gandi LiveDNS (personal access token)"},
	{Name: "godaddy", New: func() Provider { return new(godaddy.Provider) },
		Required: []string{"api_token"}, Secret: []string{"api_token"},
		About: "GoDaddy (api_token is \"key:secret\")"},
	{Name: "googleclouddns", New: func() Provider { return new(googleclouddns.Provider) },
		Required: []string{"gcp_project"}, Secret: []string{"gcp_application_default"},
		About: "Google Cloud DNS (gcp_application_default: path of a service account JSON; empty: the host's default credentials)"},
	{Name: "hetzner", New: func() Provider { return new(hetzner.Provider) },
		Required: []string{"auth_api_token"}, Secret: []string{"auth_api_token"},
		About: "Hetzner DNS"},
	// The wrapper pages the record sets, deletes only matching values and
	// stops on a failed lookup (huaweicloud_fix.go).
	{Name: "huaweicloud", New: func() Provider { return new(HuaweiCloud) },
		Required: []string{"access_key_id", "secret_access_key"}, Secret: []string{"secret_access_key"},
		About: "Huawei Cloud DNS (华为云解析)"},
	{Name: "linode", New: func() Provider { return new(linode.Provider) },
		Required: []string{"api_token"}, Secret: []string{"api_token"},
		About: "Linode (Akamai) DNS Manager"},
	{Name: "namecheap", New: func() Provider { return new(namecheap.Provider) },
		Required: []string{"api_key", "user"}, Secret: []string{"api_key"},
		About: "Namecheap (client_ip must be whitelisted in the account)"},
	{Name: "ovh", New: func() Provider { return new(ovh.Provider) },
		Required: []string{"endpoint", "application_key", "application_secret", "consumer_key"},
		Secret:   []string{"application_secret", "consumer_key"},
		About:    "OVHcloud (endpoint: ovh-eu, ovh-ca, …)"},
	{Name: "porkbun", New: func() Provider { return new(porkbun.Provider) },
		Required: []string{"api_key", "api_secret_key"}, Secret: []string{"api_key", "api_secret_key"},
		About: "Porkbun"},
	{Name: "powerdns", New: func() Provider { return new(powerdns.Provider) },
		Required: []string{"server_url", "api_token"}, Secret: []string{"api_token"},
		About: "PowerDNS Authoritative through its HTTP API (server_id defaults to localhost)"},
	{Name: "rfc2136", New: func() Provider { return new(rfc2136.Provider) },
		Required: []string{"server", "key_name", "key_alg", "key"}, Secret: []string{"key"},
		About: "any RFC 2136 server (BIND, Knot, …) with TSIG; reads by AXFR, so allow-transfer is needed with allow-update"},
	{Name: "route53", New: func() Provider { return new(route53.Provider) },
		Secret: []string{"secret_access_key", "session_token"},
		Check:  checkRoute53,
		About:  "Amazon Route 53 (keys, a profile, or the host's AWS credentials chain)"},
	// TencentCloud wraps libdns/tencentcloud, whose record methods ignore
	// the API's errors and read one page of a zone (tencentcloud.go).
	{Name: "tencentcloud", New: func() Provider { return new(TencentCloud) },
		Required: []string{"secret_id", "secret_key"}, Secret: []string{"secret_key", "session_token"},
		Check: checkTencentCloud,
		About: "Tencent Cloud DNSPod (腾讯云解析)"},
	{Name: "vultr", New: func() Provider { return new(vultr.Provider) },
		Required: []string{"api_token"}, Secret: []string{"api_token"},
		About: "Vultr DNS"},
}

// Kinds returns the registry, sorted by name.
func Kinds() []Kind {
	return append([]Kind(nil), kinds...)
}

func lookupKind(name string) (Kind, bool) {
	for _, k := range kinds {
		if k.Name == name {
			return k, true
		}
	}
	return Kind{}, false
}

// checkRoute53 loads the AWS configuration the way libdns/route53 will:
// it calls log.Fatalf when that fails (an unknown profile), which would end
// the daemon in the middle of a reissue.
func checkRoute53(p Provider) error {
	r := p.(*route53.Provider)
	var opts []func(*awsconfig.LoadOptions) error
	if r.Profile != "" {
		opts = append(opts, awsconfig.WithSharedConfigProfile(r.Profile))
	}
	if r.Region != "" {
		opts = append(opts, awsconfig.WithRegion(r.Region))
	}
	if _, err := awsconfig.LoadDefaultConfig(context.Background(), opts...); err != nil {
		return fmt.Errorf("profile: the AWS configuration does not load: %v", err)
	}
	return nil
}

// safely runs a provider call, turning a panic inside the provider (some
// index replies without checking them) into an error.
func safely(op string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: the provider panicked: %v", op, r)
		}
	}()
	return f()
}

// zoneLister is implemented by providers that can list their zones.
type zoneLister interface {
	ListZones(ctx context.Context) ([]libdns.Zone, error)
}
