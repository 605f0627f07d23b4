-- Users and locations an admin can manage (issue 17).
--
-- A removed user or location stays in its view, marked removed: tickets
-- keep their requester, users their location.
ALTER TABLE users ADD COLUMN removed BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE locations ADD COLUMN removed BOOLEAN NOT NULL DEFAULT FALSE;

-- One directory for admin-managed and auto-created users: an address
-- belongs to one user. The intake's index of users (0004) enforces it, so
-- that an admin creating a user and the intake creating one for the same
-- sender cannot both succeed. Duplicates could only come from events
-- appended by hand; the smallest user id keeps the address in the index.
DELETE FROM intake_users WHERE email <> '' AND user_id NOT IN
    (SELECT MIN(user_id) FROM intake_users WHERE email <> '' GROUP BY email);
CREATE UNIQUE INDEX intake_users_email_unique ON intake_users (email) WHERE email <> '';
