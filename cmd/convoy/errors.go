package main

import (
	"errors"
	"flag"

	"github.com/convoy-fleet/convoy/bus"
)

// exitError carries an exit code chosen by a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(err error) error   { return &exitError{exitUsage, err} }
func failedErr(err error) error  { return &exitError{exitFailed, err} }
func timeoutErr(err error) error { return &exitError{exitTimeout, err} }

// errSilent marks an error already reported to the user.
var errSilent = errors.New("reported")

func exitCode(err error) int {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, bus.ErrUnreachable):
		return exitUnreachable
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	}
	return exitFailed
}
