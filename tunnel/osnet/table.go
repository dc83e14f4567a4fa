package osnet

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Table is where the peers' routes go (config Table): TableMain
// (wg-quick's auto), TableOff (no routes at all: the admin routes), or a
// routing table's number.
type Table int

const (
	TableMain Table = 0
	TableOff  Table = -1
)

// ParseTable reads the config's Table: auto, off, a number, or a name
// from iproute2's rt_tables files.
func ParseTable(s string) (Table, error) {
	switch s {
	case "", "auto":
		return TableMain, nil
	case "off":
		return TableOff, nil
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		if n == 0 {
			return 0, fmt.Errorf("Table = 0 is not a routing table; use auto or off")
		}
		return Table(n), nil
	}
	files := []string{"/etc/iproute2/rt_tables", "/usr/share/iproute2/rt_tables", "/usr/lib/iproute2/rt_tables"}
	for _, dir := range []string{"/etc/iproute2/rt_tables.d", "/usr/share/iproute2/rt_tables.d"} {
		more, _ := filepath.Glob(filepath.Join(dir, "*.conf"))
		files = append(files, more...)
	}
	for _, f := range files {
		if n, ok := lookupTableName(f, s); ok {
			return Table(n), nil
		}
	}
	// Named by the kernel's own numbers even where no file lists them.
	if n, ok := map[string]int{"main": 254, "default": 253, "local": 255}[s]; ok {
		return Table(n), nil
	}
	return 0, fmt.Errorf("Table: no routing table named %q in /etc/iproute2/rt_tables", s)
}

// lookupTableName finds name in an rt_tables file: "NUMBER NAME" lines.
func lookupTableName(file, name string) (int, bool) {
	f, err := os.Open(file)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(strings.SplitN(sc.Text(), "#", 2)[0])
		if len(fields) == 2 && fields[1] == name {
			if n, err := strconv.ParseUint(fields[0], 0, 32); err == nil && n > 0 {
				return int(n), true
			}
		}
	}
	return 0, false
}
