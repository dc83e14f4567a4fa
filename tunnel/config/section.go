package config

import (
	"fmt"
	"io"
	"strings"
)

// lineKind is what one line of a configuration file holds.
type lineKind int

const (
	blankLine  lineKind = iota // nothing, or only a comment
	headerLine                 // [Section]
	keyLine                    // Key = Value
	badLine                    // anything else
)

// lexLine splits one line of a configuration file. For a header, k is the
// whole "[Section]"; for a key line, k and v are the key and value, both
// trimmed.
func lexLine(line string) (kind lineKind, k, v string) {
	// Like wg-quick, drop everything from '#' on. Base64 keys never
	// contain '#', so this cannot cut a value short.
	line, _, _ = strings.Cut(line, "#")
	line = strings.TrimSpace(line)
	switch {
	case line == "":
		return blankLine, "", ""
	case len(line) >= 2 && line[0] == '[' && line[len(line)-1] == ']':
		return headerLine, line, ""
	}
	k, v, ok := strings.Cut(line, "=")
	if !ok {
		return badLine, "", ""
	}
	return keyLine, strings.TrimSpace(k), strings.TrimSpace(v)
}

// fileLines splits a configuration file into lines.
func fileLines(data []byte) []string {
	// Windows editors like to start UTF-8 files with a byte order mark.
	return strings.Split(strings.TrimPrefix(string(data), "\uFEFF"), "\n")
}

// SectionKey is one key of the section ParseSection reads.
type SectionKey struct {
	Name string // canonical spelling, shown in errors; matched case-insensitively
	// List keys may be repeated, and each value is a comma-separated
	// list: Set is called once per item. Other keys may appear once.
	List bool
	Set  func(value string) error
}

// ParseSection reads a file of the one section [name], in the syntax of
// Parse: section and key names are case-insensitive and '#' starts a
// comment. It is for configuration other than a tunnel's, such as the
// rendezvous's. It calls each key's Set in the order of the file. Every
// error — an unknown section or key, a key repeated that is not a List,
// an error from Set — is an *Error naming filename, the line and the key;
// an error reading r is returned wrapped.
func ParseSection(filename string, r io.Reader, name string, keys []SectionKey) error {
	return parseSections(filename, r, name, keys, nil)
}

// ParseSections is ParseSection for a file of any number of [name]
// sections, such as a rules file's [Rule]s: section is called at each
// header with its line, and once more at the end of the file with line 0,
// so that the caller can finish the section before; an error it returns
// is returned as it is (an *Error naming the section's header, say).
// Keys may appear once per section.
func ParseSections(filename string, r io.Reader, name string, keys []SectionKey, section func(line int) error) error {
	return parseSections(filename, r, name, keys, section)
}

func parseSections(filename string, r io.Reader, name string, keys []SectionKey, section func(line int) error) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("%s: %w", filename, err)
	}
	byName := make(map[string]SectionKey, len(keys))
	for _, k := range keys {
		byName[strings.ToLower(k.Name)] = k
	}
	errorf := func(line int, k, format string, args ...any) error {
		return &Error{File: filename, Line: line, Key: k, Msg: fmt.Sprintf(format, args...)}
	}
	sectionDone := func(line int) error {
		if section == nil {
			return nil
		}
		return section(line)
	}
	var header int           // line of the current [name] header; 0 before it
	seen := map[string]int{} // keys set in this section → first line
	for i, line := range fileLines(data) {
		n := i + 1
		kind, k, v := lexLine(line)
		switch kind {
		case blankLine:
			continue
		case badLine:
			// Do not quote the line: it may be a private key on its own.
			return errorf(n, "", "expected Key = Value or [%s]", name)
		case headerLine:
			if !strings.EqualFold(strings.TrimSpace(k[1:len(k)-1]), name) {
				return errorf(n, "", "unknown section %s; want [%s]", quote(k), name)
			}
			if header != 0 && section == nil {
				return errorf(n, "", "duplicate [%s] section; the first is on line %d", name, header)
			}
			if err := sectionDone(n); err != nil {
				return err
			}
			header = n
			clear(seen)
			continue
		}
		sk, known := byName[strings.ToLower(k)]
		switch {
		case !plausibleKeyName(k):
			// A base64 key on a line of its own ends in '=', so it parses
			// as a key name. Never echo it.
			return errorf(n, "", "expected Key = Value")
		case !known:
			return errorf(n, k, "unknown key")
		case header == 0:
			return errorf(n, sk.Name, "key outside any section; add [%s] above it", name)
		case v == "":
			return errorf(n, sk.Name, "missing value")
		}
		if first, ok := seen[sk.Name]; ok && !sk.List {
			return errorf(n, sk.Name, "duplicate key; already set on line %d", first)
		} else if !ok {
			seen[sk.Name] = n
		}
		values := []string{v}
		if sk.List {
			values = splitList(v)
		}
		for _, v := range values {
			if err := sk.Set(v); err != nil {
				return errorf(n, sk.Name, "%v", err)
			}
		}
	}
	return sectionDone(0)
}
