package rollout

// Log keys, in one place so log lines stay greppable.
const (
	logRollout = "rollout"
	logKind    = "kind"
	logWave    = "wave"
	logUpgrade = "upgrade"
	logHosts   = "hosts"
	logRev     = "rev"
	logReason  = "reason"
	logErr     = "err"
)
