// Package blobbench measures the blob stores against each other: its
// benchmark writes and reads the same batches of mails through the file,
// PostgreSQL and S3 stores and prints each store's rate as a ratio of the
// file store's, measured in the same run:
//
//	go test -run '^$' -bench Stores -benchtime 5x ./adapters/blobstore/blobbench
package blobbench
