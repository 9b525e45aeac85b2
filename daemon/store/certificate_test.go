package store

import (
	"reflect"
	"testing"
	"time"
)

func testStoreCertificateRoundTrip(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()

	want := fullCertificate("shop")
	if err := s.PutCertificate(ctx, want); err != nil {
		t.Fatalf("PutCertificate: %v", err)
	}
	got, err := s.Certificate(ctx, "shop")
	if err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}

	// An upsert replaces every field, including with zero values.
	repl := &Certificate{Name: "shop", Serial: "ff", Names: []string{"shop.example.com"}, NotAfter: t1.Add(time.Hour)}
	if err := s.PutCertificate(ctx, repl); err != nil {
		t.Fatalf("PutCertificate again: %v", err)
	}
	got, err = s.Certificate(ctx, "shop")
	if err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	if !reflect.DeepEqual(got, repl) {
		t.Errorf("after replace:\n got %+v\nwant %+v", got, repl)
	}

	if err := s.PutCertificate(ctx, fullCertificate("api")); err != nil {
		t.Fatalf("PutCertificate api: %v", err)
	}
	all, err := s.Certificates(ctx)
	if err != nil {
		t.Fatalf("Certificates: %v", err)
	}
	if len(all) != 2 || all[0].Name != "api" || all[1].Name != "shop" {
		t.Errorf("Certificates = %v, want api then shop", certNames(all))
	}

	for _, bad := range []*Certificate{nil, {Serial: "x"}} {
		if err := s.PutCertificate(ctx, bad); err == nil {
			t.Errorf("PutCertificate(%+v) succeeded, want an error", bad)
		}
	}
}

func certNames(cs []*Certificate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func testStoreCertificatesEmpty(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	all, err := s.Certificates(t.Context())
	if err != nil || all == nil || len(all) != 0 {
		t.Errorf("Certificates on an empty store = %v, %v; want an empty slice, nil", all, err)
	}
	orders, err := s.ActiveOrders(t.Context())
	if err != nil || orders == nil || len(orders) != 0 {
		t.Errorf("ActiveOrders on an empty store = %v, %v; want an empty slice, nil", orders, err)
	}
	atts, err := s.Attempts(t.Context(), "shop", 0)
	if err != nil || atts == nil || len(atts) != 0 {
		t.Errorf("Attempts on an empty store = %v, %v; want an empty slice, nil", atts, err)
	}
}

func testStoreCertificateSummaries(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	if got, err := s.CertificateSummaries(ctx); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("CertificateSummaries on an empty store = %v, %v; want an empty slice, nil", got, err)
	}
	for _, name := range []string{"web", "mail"} {
		c := &Certificate{Name: name, Serial: "0a" + name, Names: []string{name + ".example.com"},
			NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC),
			CertPEM: "leaf of " + name, ChainPEM: "chain of " + name, KeyFile: "/k/" + name, KeySealed: "v1:sealed",
			UniqueID: "u-" + name, DeployedAt: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}
		if err := s.PutCertificate(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	full, err := s.Certificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.CertificateSummaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(full) {
		t.Fatalf("%d summaries for %d certificates", len(got), len(full))
	}
	for i, c := range full {
		want := *c
		want.CertPEM, want.ChainPEM, want.KeySealed = "", "", ""
		if !reflect.DeepEqual(got[i], &want) {
			t.Errorf("summary %d = %+v, want %+v", i, got[i], want)
		}
	}
}
