package bus

// SetGetMaxBytes makes the server answer b's batched gets in pieces of
// about n bytes, so tests can see GetMany ask for the rest.
func SetGetMaxBytes(b *Bucket, n int) { b.getMaxBytes = n }
