package events_test

import (
	"os"
	"path/filepath"
)

func readFile(name string) ([]byte, error) { return os.ReadFile(filepath.Join("testdata", name)) }
