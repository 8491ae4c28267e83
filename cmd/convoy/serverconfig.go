package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/convoy-fleet/convoy/projections/alerts"
)

// serverFile is the part of convoy server's --config file that is not a
// flag: the alerts it sends.
type serverFile struct {
	Alerts *alerts.Config `toml:"alerts"`
}

// applyServerConfig reads convoy server's --config file: each top-level
// key is one of the server's flags (with _ or -), set unless the command
// line gave it, and an [alerts] section (docs/alerts.md) is returned, nil
// when there is none. Unknown keys are errors naming the key and its
// line; every problem is reported at once.
func applyServerConfig(path string, fs *flag.FlagSet) (*alerts.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	wrap := func(err error) error { return fmt.Errorf("--config %s: %w", path, err) }
	var keys map[string]any
	if err := toml.Unmarshal(b, &keys); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, wrap(fmt.Errorf("line %d, column %d: %s", row, col, de.Error()))
		}
		return nil, wrap(err)
	}
	var f serverFile
	var errs []error
	err = toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields().Decode(&f)
	var sm *toml.StrictMissingError
	var de *toml.DecodeError
	switch {
	case errors.As(err, &sm):
		for _, e := range sm.Errors {
			k := e.Key()
			if len(k) == 1 && serverConfigFlag(fs, k[0]) != nil {
				continue // a flag: set below
			}
			row, _ := e.Position()
			errs = append(errs, fmt.Errorf("line %d: unknown key %q: the keys are convoy server's flags (convoy server -h; --http is http, --min-free min_free) and an [alerts] section (docs/alerts.md)", row, strings.Join(k, ".")))
		}
	case errors.As(err, &de):
		row, col := de.Position()
		errs = append(errs, fmt.Errorf("line %d, column %d: %s", row, col, de.Error()))
	case err != nil:
		errs = append(errs, err)
	}
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		fl := serverConfigFlag(fs, k)
		if fl == nil || given[fl.Name] {
			continue
		}
		v, err := flagValue(keys[k])
		if err == nil {
			err = fs.Set(fl.Name, v)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
	}
	if f.Alerts != nil {
		f.Alerts.SetDefaults()
		if err := f.Alerts.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, wrap(errors.Join(errs...))
	}
	return f.Alerts, nil
}

// serverConfigFlag is the flag a config key names (min_free or
// min-free: --min-free), or nil; --config itself is no key.
func serverConfigFlag(fs *flag.FlagSet, key string) *flag.Flag {
	name := strings.ReplaceAll(key, "_", "-")
	if name == "config" || name == "alerts" {
		return nil
	}
	return fs.Lookup(name)
}

// flagValue is a TOML value as its flag takes it: lists joined by commas.
func flagValue(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool, int64, float64:
		return fmt.Sprint(v), nil
	case []any:
		parts := make([]string, len(v))
		for i, x := range v {
			s, ok := x.(string)
			if !ok {
				return "", fmt.Errorf("want a list of strings, got %T in it", x)
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want a string, number, boolean or list of strings, got %T", v)
}
