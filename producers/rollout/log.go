package rollout

// Log keys, in one place so log lines stay greppable.
const (
	logRollout = "rollout"
	logKind    = "kind"
	logWave    = "wave"
	logUpgrade = "upgrade"
	logHosts   = "hosts"
	logReason  = "reason"
	logErr     = "err"
)
