package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// This file holds how values are encoded in the columns both drivers
// share: times as fixed-width text, and the JSON of orders.data.

// timeLayout is RFC 3339 in UTC with exactly nine fractional digits: unlike
// RFC3339Nano, whose trailing zeros are trimmed, its text sorts as the times
// do, so that ORDER BY on a time column is ORDER BY time.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// formatTime formats t for a time column; the zero time is "", so that "not
// set" stays distinguishable and round-trips.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}

// parseTime reverses formatTime. The time is returned in UTC.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q: %w", s, err)
	}
	return t.UTC(), nil
}

// orderData is the JSON in orders.data: the fields of Order that are not
// columns. It is dcvd's on-disk format, so its names are fixed by tags
// rather than by Go field names, and the types of other packages it holds
// are either made for persistence (providers.Record, httpchallenge.Written
// carry JSON tags) or mirrored here.
type orderData struct {
	Names              []string                `json:"names"`
	DomainDCV          map[string]string       `json:"domain_dcv"`
	KeyType            string                  `json:"key_type"`
	KeyFile            string                  `json:"key_file"`
	KeySealed          string                  `json:"key_sealed"` // since schema version 2
	CSR                string                  `json:"csr"`
	AllowDomainRemoval bool                    `json:"allow_domain_removal"`
	Instructions       []instructionData       `json:"instructions"`
	DNSRecords         []providers.Record      `json:"dns_records"`
	Files              []httpchallenge.Written `json:"files"`
	Cost               float64                 `json:"cost"`
	CertPEM            string                  `json:"cert_pem"`
	ChainPEM           string                  `json:"chain_pem"`
	Serial             string                  `json:"serial"`
	NotBefore          string                  `json:"not_before"`
	NotAfter           string                  `json:"not_after"`
	Attempts           int                     `json:"attempts"`
	NextAttempt        string                  `json:"next_attempt"`
	LastError          string                  `json:"last_error"`
}

// instructionData mirrors reseller.Instruction. The types it points to are
// converted from reseller's, so that a field added there stops the build
// here instead of being dropped on disk.
type instructionData struct {
	Domain string     `json:"domain"`
	Method string     `json:"method"`
	Status string     `json:"status"`
	CNAME  *cnameData `json:"cname,omitempty"`
	File   *fileData  `json:"file,omitempty"`
	Email  *emailData `json:"email,omitempty"`
}

type cnameData struct {
	Name   string `json:"name"`
	Target string `json:"target"`
}

type fileData struct {
	Scheme   string `json:"scheme"`
	Host     string `json:"host"`
	Path     string `json:"path"`
	FileName string `json:"file_name"`
	Content  string `json:"content"`
	URL      string `json:"url"`
}

type emailData struct {
	Address string `json:"address"`
}

func encodeOrderData(o *Order) (string, error) {
	d := orderData{
		Names:              o.Names,
		DomainDCV:          o.DomainDCV,
		KeyType:            o.KeyType,
		KeyFile:            o.KeyFile,
		KeySealed:          o.KeySealed,
		CSR:                o.CSR,
		AllowDomainRemoval: o.AllowDomainRemoval,
		DNSRecords:         o.DNSRecords,
		Files:              o.Files,
		Cost:               o.Cost,
		CertPEM:            o.CertPEM,
		ChainPEM:           o.ChainPEM,
		Serial:             o.Serial,
		NotBefore:          formatTime(o.NotBefore),
		NotAfter:           formatTime(o.NotAfter),
		Attempts:           o.Attempts,
		NextAttempt:        formatTime(o.NextAttempt),
		LastError:          o.LastError,
	}
	if o.Instructions != nil {
		d.Instructions = make([]instructionData, len(o.Instructions))
		for i, in := range o.Instructions {
			d.Instructions[i] = instructionData{
				Domain: in.Domain,
				Method: in.Method,
				Status: in.Status,
				CNAME:  (*cnameData)(in.CNAME),
				File:   (*fileData)(in.File),
				Email:  (*emailData)(in.Email),
			}
		}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("encode order data: %w", err)
	}
	return string(b), nil
}

func decodeOrderData(s string, o *Order) error {
	var d orderData
	if err := decodeJSON(s, &d); err != nil {
		return fmt.Errorf("order data: %w", err)
	}
	o.Names = d.Names
	o.DomainDCV = d.DomainDCV
	o.KeyType = d.KeyType
	o.KeyFile = d.KeyFile
	o.KeySealed = d.KeySealed
	o.CSR = d.CSR
	o.AllowDomainRemoval = d.AllowDomainRemoval
	o.DNSRecords = d.DNSRecords
	o.Files = d.Files
	o.Cost = d.Cost
	o.CertPEM = d.CertPEM
	o.ChainPEM = d.ChainPEM
	o.Serial = d.Serial
	o.Attempts = d.Attempts
	o.LastError = d.LastError
	if d.Instructions != nil {
		o.Instructions = make([]reseller.Instruction, len(d.Instructions))
		for i, in := range d.Instructions {
			o.Instructions[i] = reseller.Instruction{
				Domain: in.Domain,
				Method: in.Method,
				Status: in.Status,
				CNAME:  (*reseller.CNAMEInstruction)(in.CNAME),
				File:   (*reseller.FileInstruction)(in.File),
				Email:  (*reseller.EmailInstruction)(in.Email),
			}
		}
	}
	var errNB, errNA, errNext error
	o.NotBefore, errNB = parseTime(d.NotBefore)
	o.NotAfter, errNA = parseTime(d.NotAfter)
	o.NextAttempt, errNext = parseTime(d.NextAttempt)
	return errors.Join(errNB, errNA, errNext)
}

// decodeJSON decodes s into v, refusing fields v lacks: state written by a
// newer dcvd is refused rather than silently shortened.
func decodeJSON(s string, v any) error {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	return nil
}
