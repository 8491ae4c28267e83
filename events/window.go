package events

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Window is a span of local time, every day or on some weekdays: when a
// worker may reboot its host (reboot.window), or a rollout may start a
// wave (--window). The zero Window (an empty string) is always open.
type Window struct {
	text       string
	days       [7]bool // by time.Weekday: the day the span starts on
	start, end int     // minutes after midnight; end <= start crosses midnight
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ParseWindow parses "[DAY[,DAY...]] HH:MM-HH:MM": "Sat 02:00-05:00",
// "Sat,Sun 02:00-05:00", "02:00-05:00" (every day) or "22:00-02:00"
// (across midnight: it ends on the next day). Days are Mon … Sun. An
// empty string is the window that is always open.
func ParseWindow(s string) (Window, error) {
	w := Window{text: strings.TrimSpace(s)}
	if w.text == "" {
		return w, nil
	}
	bad := func(why string) (Window, error) {
		return Window{}, fmt.Errorf("%q: %s (want [DAY[,DAY...]] HH:MM-HH:MM, such as \"Sat 02:00-05:00\" or \"22:00-02:00\")", s, why)
	}
	f := strings.Fields(w.text)
	span := f[len(f)-1]
	switch len(f) {
	case 1:
		w.days = [7]bool{true, true, true, true, true, true, true}
	case 2:
		for _, d := range strings.Split(f[0], ",") {
			wd, ok := weekdays[strings.ToLower(d)]
			if !ok {
				return bad(fmt.Sprintf("day %q is not one of Mon, Tue, Wed, Thu, Fri, Sat, Sun", d))
			}
			w.days[wd] = true
		}
	default:
		return bad("too many words")
	}
	from, to, ok := strings.Cut(span, "-")
	if !ok {
		return bad(fmt.Sprintf("%q is not a range of times", span))
	}
	var err error
	if w.start, err = minuteOfDay(from, false); err != nil {
		return bad(err.Error())
	}
	if w.end, err = minuteOfDay(to, true); err != nil {
		return bad(err.Error())
	}
	if w.start == w.end || (w.start == 0 && w.end == 24*60) {
		return bad("the start and end are the same time; leave window empty to allow any time")
	}
	return w, nil
}

// minuteOfDay parses HH:MM; 24:00 is allowed as an end.
func minuteOfDay(s string, end bool) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	switch {
	case !ok || len(h) != 2 || len(m) != 2 || err1 != nil || err2 != nil:
		return 0, fmt.Errorf("%q is not a time of day HH:MM", s)
	case end && hh == 24 && mm == 0:
		return 24 * 60, nil
	case hh > 23 || mm > 59:
		return 0, fmt.Errorf("%q is not a time of day (00:00 to 23:59)", s)
	}
	return hh*60 + mm, nil
}

// String returns the window as written.
func (w Window) String() string {
	if w.text == "" {
		return "any time"
	}
	return w.text
}

// Contains reports whether t, in its own location, is inside the window.
func (w Window) Contains(t time.Time) bool {
	_, ok := w.Opened(t)
	return ok
}

// Opened returns when the occurrence of the window that contains t
// opened, and whether t is inside one. The always-open window opens
// each day at midnight, so that a reboot that failed is tried again the
// next day.
func (w Window) Opened(t time.Time) (time.Time, bool) {
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
	if w.text == "" {
		return day, true
	}
	m := t.Hour()*60 + t.Minute()
	at := func(d time.Time) time.Time {
		return time.Date(d.Year(), d.Month(), d.Day(), w.start/60, w.start%60, 0, 0, d.Location())
	}
	if w.start < w.end {
		return at(day), w.days[t.Weekday()] && w.start <= m && m < w.end
	}
	// Across midnight: from start on a listed day to end on the next.
	if m >= w.start {
		return at(day), w.days[t.Weekday()]
	}
	prev := day.AddDate(0, 0, -1)
	return at(prev), m < w.end && w.days[prev.Weekday()]
}
