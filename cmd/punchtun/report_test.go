//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// Lab tests hand their figures to the scripts that print tables
// (scripts/natmatrix.sh, scripts/recovery.sh) as JSON lines, one object per
// line, in a file an environment variable names; TestMain prints the table
// from that file when the run ends.

// appendJSONLine appends v as one JSON line to the file the environment
// variable env names; it does nothing when env is unset.
func appendJSONLine(t *testing.T, env string, v any) {
	name := os.Getenv(env)
	if name == "" {
		return
	}
	f, err := os.OpenFile(name, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	if err := json.NewEncoder(f).Encode(v); err != nil {
		t.Error(err)
	}
}

// groupRows groups rows by key, keys in the order they first appear.
func groupRows[T any](rows []T, key func(T) string) (order []string, groups map[string][]T) {
	groups = map[string][]T{}
	for _, r := range rows {
		k := key(r)
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	return order, groups
}

// readJSONLines decodes the JSON lines of the file name, up to the first
// one that does not decode.
func readJSONLines[T any](name string) ([]T, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	var out []T
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		var v T
		if dec.Decode(&v) != nil {
			return out, nil
		}
		out = append(out, v)
	}
}
