package workers

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/events"
)

// markerRoom is what a capped log keeps free for its marker line, so
// head, marker and tail together stay within logs.max_size.
const markerRoom = 256

// cappedLog is an upgrade's log file, capped at a size: the first half of
// the output goes straight to the file, the rest through a ring of the
// second half's size in a side file (NAME.tail), so memory stays bounded
// whatever a command prints. Close writes a marker line saying how many
// bytes were dropped, then the ring in order, and removes the side file.
// Opened again (recovery appends to the log of the upgrade it ends), it
// goes on as if the output had never stopped. Writes come from one
// goroutine at a time (newExec serialises them).
type cappedLog struct {
	f        *os.File
	path     string
	head     int64 // bytes the head may hold
	size     int64 // bytes in the file now
	ring     *os.File
	ringSize int64
	ringN    uint64 // bytes ever written to the ring
	// carried counts bytes dropped before this log was reopened (read
	// from its marker), so the one marker left counts them all.
	carried uint64
}

// ringHeader holds ringN and carried at the start of the side file, so a
// log whose worker was killed mid-upgrade can still be put in order when
// reopened.
const ringHeader = 16

// markerFormat is the line between a capped log's head and its tail.
const markerFormat = "\n# convoy: %d bytes of output dropped here (logs.max_size keeps the head and the tail of a log)\n"

func tailPath(log string) string { return log + ".tail" }

// openCappedLog opens path for appending, capped at max bytes (0: no cap).
func openCappedLog(path string, max int64) (*cappedLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	ownLikeParent(path)
	l := &cappedLog{f: f, path: path}
	if max > 0 {
		room := max - markerRoom
		l.head = room / 2
		l.ringSize = room - l.head
	}
	// A side file left by a killed worker is this log's tail: finish it
	// first, so the log is whole again.
	if err := l.finishStale(); err != nil {
		f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	l.size = fi.Size()
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, err
	}
	if max > 0 && l.size > l.head {
		// Reopened past its head: what follows the head is the start
		// of the tail.
		if err := l.moveToRing(); err != nil {
			f.Close()
			return nil, err
		}
	}
	return l, nil
}

func (l *cappedLog) Write(p []byte) (int, error) {
	n := len(p)
	if l.ringSize == 0 || l.ring == nil && l.size+int64(len(p)) <= l.head {
		w, err := l.f.Write(p)
		l.size += int64(w)
		return w, err
	}
	if l.ring == nil {
		fill := l.head - l.size
		if fill > 0 {
			w, err := l.f.Write(p[:fill])
			l.size += int64(w)
			if err != nil {
				return w, err
			}
			p = p[fill:]
		}
		if err := l.openRing(); err != nil {
			return n - len(p), err
		}
	}
	if err := l.toRing(p); err != nil {
		return 0, err
	}
	return n, nil
}

func (l *cappedLog) openRing() error {
	r, err := os.OpenFile(tailPath(l.path), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	ownLikeParent(r.Name())
	l.ring, l.ringN = r, 0
	return nil
}

// toRing writes p into the ring, wrapping, and records how much it holds.
func (l *cappedLog) toRing(p []byte) error {
	if int64(len(p)) > l.ringSize {
		// Only the last ringSize bytes of p can survive.
		skip := int64(len(p)) - l.ringSize
		l.ringN += uint64(skip)
		p = p[skip:]
	}
	for len(p) > 0 {
		off := int64(l.ringN % uint64(l.ringSize))
		chunk := min(int64(len(p)), l.ringSize-off)
		if _, err := l.ring.WriteAt(p[:chunk], ringHeader+off); err != nil {
			return err
		}
		l.ringN += uint64(chunk)
		p = p[chunk:]
	}
	var h [ringHeader]byte
	binary.BigEndian.PutUint64(h[:8], l.ringN)
	binary.BigEndian.PutUint64(h[8:], l.carried)
	_, err := l.ring.WriteAt(h[:], 0)
	return err
}

// moveToRing moves what the file holds past its head into the ring, in
// bounded chunks, and cuts the file at the head.
func (l *cappedLog) moveToRing() error {
	if err := l.openRing(); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	off := l.head
	// The marker of an earlier close is not output: carry its count.
	n, _ := l.f.ReadAt(buf[:min(markerRoom, l.size-off)], off)
	var dropped uint64
	if _, err := fmt.Sscanf(string(buf[:n]), markerFormat, &dropped); err == nil {
		if i := bytes.IndexByte(buf[1:n], '\n'); i >= 0 {
			l.carried = dropped
			off += int64(i) + 2
		}
	}
	for off < l.size {
		n, err := l.f.ReadAt(buf[:min(int64(len(buf)), l.size-off)], off)
		if n > 0 {
			if err := l.toRing(buf[:n]); err != nil {
				return err
			}
			off += int64(n)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if n == 0 {
			break
		}
	}
	if err := l.f.Truncate(l.head); err != nil {
		return err
	}
	l.size = l.head
	_, err := l.f.Seek(l.head, io.SeekStart)
	return err
}

// finishStale appends the tail a killed worker left in NAME.tail.
func (l *cappedLog) finishStale() error {
	r, err := os.OpenFile(tailPath(l.path), os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	fi, err := r.Stat()
	if err != nil {
		r.Close()
		return err
	}
	var h [ringHeader]byte
	if _, err := r.ReadAt(h[:], 0); err != nil {
		// Nothing was written into it yet.
		r.Close()
		return os.Remove(r.Name())
	}
	size := l.ringSize
	defer func() { l.ringSize = size }()
	l.ring, l.ringN, l.carried, l.ringSize = r, binary.BigEndian.Uint64(h[:8]), binary.BigEndian.Uint64(h[8:]), fi.Size()-ringHeader
	if _, err := l.f.Seek(0, io.SeekEnd); err != nil {
		return err
	}
	return l.finish()
}

// finish writes the marker and the ring, in order, to the end of the
// file and removes the side file.
func (l *cappedLog) finish() error {
	if l.ring == nil {
		return nil
	}
	defer func() { l.ring, l.carried = nil, 0 }()
	kept := min(l.ringN, uint64(l.ringSize))
	var err error
	if dropped := l.carried + l.ringN - kept; dropped > 0 {
		_, err = fmt.Fprintf(l.f, markerFormat, dropped)
	}
	if kept > 0 && err == nil {
		if l.ringN > uint64(l.ringSize) {
			// Wrapped: from the oldest byte to the end of the ring,
			// then from its start to the newest.
			start := int64(l.ringN % uint64(l.ringSize))
			_, err = io.Copy(l.f, io.NewSectionReader(l.ring, ringHeader+start, l.ringSize-start))
			if err == nil {
				_, err = io.Copy(l.f, io.NewSectionReader(l.ring, ringHeader, start))
			}
		} else {
			_, err = io.Copy(l.f, io.NewSectionReader(l.ring, ringHeader, int64(kept)))
		}
	}
	if cerr := l.ring.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("upgrade log %s: %w", l.path, err)
	}
	return os.Remove(tailPath(l.path))
}

// Close finishes the tail and closes the file.
func (l *cappedLog) Close() error {
	err := l.finish()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// pruneLogs removes upgrade logs (NAME.log where NAME is an upgrade id)
// beyond the newest keep, and those last written before now-maxAge
// (maxAge 0: no age limit). Other files (boot-check.log, reboot.log)
// are left alone. It returns what it removed.
func pruneLogs(dir string, keep int, maxAge time.Duration, now time.Time) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("upgrade logs: %w", err)
	}
	var logs []string
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".log")
		if ok && e.Type().IsRegular() && events.ValidateID(id) == nil {
			logs = append(logs, e.Name())
		}
	}
	// Upgrade ids are ULIDs: by name is by start time, oldest first.
	sort.Strings(logs)
	var removed []string
	var errs []error
	for i, name := range logs {
		old := i < len(logs)-keep
		if !old && maxAge > 0 {
			if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && now.Sub(fi.ModTime()) > maxAge {
				old = true
			}
		}
		if !old {
			continue
		}
		p := filepath.Join(dir, name)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		_ = os.Remove(tailPath(p))
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}
