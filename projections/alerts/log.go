package alerts

// Log keys, in one place so log lines stay greppable.
const (
	logAlert    = "alert"
	logKind     = "kind"
	logHost     = "host"
	logSeverity = "severity"
	logSink     = "sink"
	logSeq      = "seq"
	logErr      = "err"
)
