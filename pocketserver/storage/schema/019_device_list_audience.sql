-- Device list changes seen by one user only.
--
-- only_for NULL: everyone who shares a room with user_id hears of the change (as
-- before). A user ID: only that user does: a new user-signing key, and signatures made
-- with it, are private to their owner (end_to_end_encryption.md "Cross-signing"; as
-- Synapse's notify_user_signature_update).
ALTER TABLE e2e_device_list_changes ADD COLUMN only_for TEXT;
