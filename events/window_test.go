package events

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseWindowRefuses(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Sta 02:00-05:00", `day "Sta"`},
		{"Sat 2:00-05:00", `"2:00" is not a time of day`},
		{"Sat 02:00-25:00", `"25:00" is not a time of day (00:00 to 23:59)`},
		{"Sat 02:00", `is not a range of times`},
		{"Sat 02:00-02:00", "the same time"},
		{"on Sat 02:00-05:00", "too many words"},
		{"24:00-02:00", `"24:00"`},
		{"Sat 02:60-03:00", `"02:60"`},
	} {
		_, err := ParseWindow(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "want [DAY") {
			t.Errorf("ParseWindow(%q) = %v, want an error saying %q and the form", tc.in, err, tc.want)
		}
	}
}

func TestWindowContains(t *testing.T) {
	at := func(day int, hhmm string) time.Time { return localTime(t, day, hhmm) }
	for _, tc := range []struct {
		window string
		t      time.Time
		want   bool
	}{
		{"Sat 02:00-05:00", at(5, "02:00"), true},
		{"Sat 02:00-05:00", at(5, "04:59"), true},
		{"Sat 02:00-05:00", at(5, "05:00"), false},
		{"Sat 02:00-05:00", at(5, "01:59"), false},
		{"Sat 02:00-05:00", at(4, "03:00"), false}, // Friday
		{"Sat 02:00-05:00", at(6, "03:00"), false}, // Sunday
		{"sat,SUN 02:00-05:00", at(6, "03:00"), true},
		{"02:00-05:00", at(1, "03:00"), true}, // every day
		{"02:00-05:00", at(1, "06:00"), false},
		{"22:00-02:00", at(1, "23:30"), true},
		{"22:00-02:00", at(2, "01:59"), true},
		{"22:00-02:00", at(2, "02:00"), false},
		{"22:00-02:00", at(2, "21:59"), false},
		{"Sat 22:00-02:00", at(5, "23:00"), true},
		{"Sat 22:00-02:00", at(6, "01:00"), true},  // Sunday morning: Saturday's window
		{"Sat 22:00-02:00", at(5, "01:00"), false}, // Saturday morning: Friday's would be
		{"Sat 22:00-02:00", at(6, "23:00"), false},
		{"Sat 22:00-24:00", at(5, "23:59"), true},
		{"", at(3, "12:00"), true},
	} {
		w, err := ParseWindow(tc.window)
		if err != nil {
			t.Fatalf("ParseWindow(%q): %v", tc.window, err)
		}
		if got := w.Contains(tc.t); got != tc.want {
			t.Errorf("%q contains %s (%s): %v, want %v", tc.window, tc.t.Format("2006-01-02 15:04"), tc.t.Weekday(), got, tc.want)
		}
	}
}

// localTime returns 2026-12-<day> hh:mm in local time; the 5th is a
// Saturday.
func localTime(t *testing.T, day int, hhmm string) time.Time {
	t.Helper()
	tm, err := time.ParseInLocation("2006-01-02 15:04", fmt.Sprintf("2026-12-%02d %s", day, hhmm), time.Local)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}
