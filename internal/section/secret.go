package section

import "strings"

// A secret KEY may be given in three forms: KEY (inline, in the config
// file), KEY_file (a file holding it: the file's trailing line breaks are
// dropped, and it may be one in systemd's $CREDENTIALS_DIRECTORY) or
// KEY_env (an environment variable holding it). Exactly one may be set.
const (
	FileSuffix = "_file"
	EnvSuffix  = "_env"
)

// Forms lists the forms of key that the section sets, in the order key,
// key_file, key_env.
func (s *Section) Forms(key string) []string {
	var found []string
	for _, k := range []string{key, key + FileSuffix, key + EnvSuffix} {
		if s.Has(k) {
			found = append(found, k)
		}
	}
	return found
}

// FailDuplicate reports key set in more than one of forms (full keys of
// this section, listed in the message in the order given).
func (s *Section) FailDuplicate(key string, forms []string) {
	names := make([]string, len(forms))
	for i, f := range forms {
		names[i] = s.Key(f)
	}
	s.Fail(key, "set more than once (%s): keep one", strings.Join(names, ", "))
}

// WarnInlineSecret warns that the secret key is written in the config
// file, which is allowed but leaves it wherever the file is copied.
func (s *Section) WarnInlineSecret(key string) {
	s.Warn(key, "a secret written in the config file; prefer %s_file or %s_env", key, key)
}

// Secret reads the secret key from exactly one of its forms (key, key_file,
// key_env). used is the form it was read from, so that the caller can name
// it in further checks; set is false when no form is present, which the
// caller reports if the secret is required. On a problem (reported)
// value is "". No message quotes the value.
//
// It does not warn about a secret written inline: whether that is unwise
// can depend on the value (a connection string without a password is no
// secret), so the caller calls WarnInlineSecret when used == key.
func (s *Section) Secret(key string) (value, used string, set bool) {
	forms := s.Forms(key)
	switch len(forms) {
	case 0:
		return "", "", false
	case 1:
	default:
		s.FailDuplicate(key, forms)
		return "", "", true
	}
	used = forms[0]
	v, ok := s.String(used)
	if !ok {
		return "", used, true
	}
	value, _ = s.Resolve(key, used, v)
	return value, used, true
}

// Resolve returns the secret that v, the string set at form (one of key,
// key_file and key_env), stands for: v itself, the content of file v
// without its trailing line breaks, or the value of environment variable
// v. An empty v, an unreadable file or an empty result is reported, and
// ok is false. It is for callers that read the form's value themselves
// (package providers accepts any TOML type inline); a caller with a
// non-string value at key_file or key_env passes "", which is reported
// as the missing path or name it is.
func (s *Section) Resolve(key, form, v string) (value string, ok bool) {
	switch form {
	case key + FileSuffix:
		if v == "" {
			s.Fail(form, "must be a file path")
			return "", false
		}
		b, err := s.opts.ReadFile(v)
		if err != nil {
			s.Fail(form, "cannot read the secret: %v", err)
			return "", false
		}
		value = strings.TrimRight(string(b), "\r\n")
		if value == "" {
			s.Fail(form, "file %s is empty", v)
			return "", false
		}
		return value, true
	case key + EnvSuffix:
		if v == "" {
			s.Fail(form, "must be the name of an environment variable")
			return "", false
		}
		value, found := s.opts.LookupEnv(v)
		if !found || value == "" {
			s.Fail(form, "environment variable %s is not set", v)
			return "", false
		}
		return value, true
	default:
		if v == "" {
			s.Fail(form, "must not be empty")
			return "", false
		}
		return v, true
	}
}
