package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// sectionKeys records what ParseSection sets: Listen is a list, Port a
// number, Name a string.
func sectionKeys(got *[]string) []SectionKey {
	rec := func(name string, check func(string) error) SectionKey {
		return SectionKey{Name: name, List: name == "Listen", Set: func(v string) error {
			if check != nil {
				if err := check(v); err != nil {
					return err
				}
			}
			*got = append(*got, name+"="+v)
			return nil
		}}
	}
	return []SectionKey{
		rec("Listen", nil),
		rec("Port", func(v string) error {
			if _, err := strconv.ParseUint(v, 10, 16); err != nil {
				return fmt.Errorf("must be 0..65535, got %q", v)
			}
			return nil
		}),
		rec("Name", nil),
	}
}

func TestParseSection(t *testing.T) {
	const file = "\uFEFF# a comment\n\n[ rendezvous ]  # trailing comment\nlisten = 127.0.0.1:1, [::1]:2\nLISTEN=127.0.0.1:3\nPort = 42\nName = a#b\n"
	var got []string
	if err := ParseSection("rv.conf", strings.NewReader(file), "Rendezvous", sectionKeys(&got)); err != nil {
		t.Fatal(err)
	}
	want := "Listen=127.0.0.1:1 Listen=[::1]:2 Listen=127.0.0.1:3 Port=42 Name=a"
	if s := strings.Join(got, " "); s != want {
		t.Errorf("set %s\nwant %s", s, want)
	}
	// A file of comments only sets nothing.
	got = nil
	if err := ParseSection("rv.conf", strings.NewReader("# nothing\n"), "Rendezvous", sectionKeys(&got)); err != nil || got != nil {
		t.Errorf("comments only: %v, set %v", err, got)
	}
}

func TestParseSectionErrors(t *testing.T) {
	const privateKey = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
	for _, tc := range []struct {
		name, file, want string
	}{
		{"bad value", "[Rendezvous]\nPort = 99999\n", `rv.conf:2: Port: must be 0..65535, got "99999"`},
		{"unknown key", "[Rendezvous]\n\nFrob = 1\n", "rv.conf:3: Frob: unknown key"},
		{"repeated key", "[Rendezvous]\nPort = 1\nport = 2\n", "rv.conf:3: Port: duplicate key; already set on line 2"},
		{"outside section", "Port = 1\n[Rendezvous]\n", "rv.conf:1: Port: key outside any section; add [Rendezvous] above it"},
		{"other section", "[Interface]\nPort = 1\n", `rv.conf:1: unknown section "[Interface]"; want [Rendezvous]`},
		{"two sections", "[Rendezvous]\n[Rendezvous]\n", "rv.conf:2: duplicate [Rendezvous] section; the first is on line 1"},
		{"no equals", "[Rendezvous]\nPort 1\n", "rv.conf:2: expected Key = Value or [Rendezvous]"},
		{"empty value", "[Rendezvous]\nName =\n", "rv.conf:2: Name: missing value"},
		// A key pasted on a line of its own is never echoed.
		{"bare key", "[Rendezvous]\n" + privateKey + "\n", "rv.conf:2: expected Key = Value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			err := ParseSection("rv.conf", strings.NewReader(tc.file), "Rendezvous", sectionKeys(&got))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v (%T), want *Error", err, err)
			}
			if err.Error() != tc.want {
				t.Errorf("error %q\nwant  %q", err, tc.want)
			}
			if strings.Contains(err.Error(), strings.TrimSuffix(privateKey, "=")) {
				t.Error("error shows the key")
			}
		})
	}
}
