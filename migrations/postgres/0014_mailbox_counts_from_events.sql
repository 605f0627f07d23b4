-- The mailbox status counts mails from their events of record (MailReceived,
-- MailFailed, MailSkipped), not from each poll's own tally, which a poll
-- killed mid-way never records (issue 16). The projection is renamed
-- projection.mailbox_status.v2 and reads the log again from the start, so
-- its tables are emptied here and the old name's offset is dropped.
--
-- mailbox_counted holds the id of every mail event counted, so that an
-- event delivered again is not counted twice: the projection inserts the
-- ids of a batch and counts only the rows the insert took.
CREATE TABLE mailbox_counted (
    event_id TEXT COLLATE "C" PRIMARY KEY
);

DELETE FROM mailbox_status;
DELETE FROM mailbox_set_aside;
DELETE FROM subscription_offsets WHERE consumer_group = 'projection.mailbox_status.v1';
