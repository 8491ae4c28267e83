package workers

// Log keys, in one place so log lines stay greppable.
const (
	logHost    = "host"
	logUpgrade = "upgrade"
	logKind    = "kind"
	logSeq     = "seq"
	logStage   = "stage"
	logErr     = "err"
	logRetry   = "retry_in"
	logReason  = "reason"
)
