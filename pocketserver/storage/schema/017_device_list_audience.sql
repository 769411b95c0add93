-- Device list changes seen by one user only, and device additions and renames.
--
-- only_for NULL: everyone who shares a room with user_id hears of the change (as
-- before). A user ID: only that user does: a new user-signing key, and signatures made
-- with it, are private to their owner (end_to_end_encryption.md "Cross-signing"; as
-- Synapse's notify_user_signature_update).
ALTER TABLE e2e_device_list_changes ADD COLUMN only_for TEXT;

-- A new device and a renamed device change the user's device list (as Synapse): other
-- clients refetch it, and the user's own clients see their new devices.
CREATE TRIGGER e2e_device_added AFTER INSERT ON devices
BEGIN
    INSERT INTO e2e_device_list_changes (user_id) VALUES (NEW.user_id);
END;

CREATE TRIGGER e2e_device_renamed AFTER UPDATE OF display_name ON devices
WHEN NEW.display_name IS NOT OLD.display_name
BEGIN
    INSERT INTO e2e_device_list_changes (user_id) VALUES (NEW.user_id);
END;
