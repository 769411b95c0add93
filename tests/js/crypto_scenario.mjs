// matrix-js-sdk with its Rust crypto (initRustCrypto) against a real pocketserver:
// cross-signing, secret storage, key backup, an encrypted chat, and a second device
// that recovers everything from secret storage and the key backup.
//
// Usage: node crypto_scenario.mjs '{"baseUrl": "...", "alice": {"user": "...", "password": "..."},
//                                   "bob": {...}}'
// Prints one "ok <step>" line per step and, last, "result <JSON>" with what the Python
// test checks on the server; exits 1 with "FAIL <step>: <why>" on the first failure.

import * as sdk from "matrix-js-sdk";
import { decodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/index.js";

import { findBody, harness, passwordUia, until } from "./crypto_harness.mjs";

const cfg = JSON.parse(process.argv[2]);
const BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2";
const { login, start, step, run } = harness(cfg);

// Poll the server until backup `version` holds at least `count` sessions of the room.
function backedUpSessions(client, version, count) {
  const path = `/room_keys/keys/${encodeURIComponent(ctx.roomId)}`;
  return until(async () => {
    const res = await client.http.authedRequest(sdk.Method.Get, path, { version });
    const ids = Object.keys(res.sessions ?? {});
    return ids.length >= count ? ids : null;
  }, `${count} sessions in backup ${version}`);
}

const ctx = { uia: [] };
const result = {};

step("alice logs in with rust crypto", async () => {
  ctx.a1 = await login(cfg.alice, "A1");
  result.a1 = ctx.a1.getDeviceId();
  const own = await ctx.a1.getCrypto().getOwnDeviceKeys();
  result.a1_ed25519 = own.ed25519;
});

step("bootstrap cross-signing", async () => {
  const crypto = ctx.a1.getCrypto();
  const auth = passwordUia(cfg.alice, ctx.uia);
  await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: auth });
  // Replacing the keys needs User-Interactive Auth: the password stage.
  await crypto.bootstrapCrossSigning({ setupNewCrossSigning: true, authUploadDeviceSigningKeys: auth });
  if (ctx.uia.join() !== "no auth needed,password") throw new Error(`UIA went ${ctx.uia}`);
  result.uia = ctx.uia;
  // Only now start syncing: a /keys/query sent before the reset and answered after it
  // (with the old keys, correctly) makes the Rust crypto drop its new private keys.
  await start(ctx.a1);
  await until(async () => (await crypto.getCrossSigningKeyId("master")) !== null, "the new keys in /keys/query");
});

step("bootstrap secret storage and key backup", async () => {
  const crypto = ctx.a1.getCrypto();
  await crypto.bootstrapSecretStorage({
    createSecretStorageKey: async () => {
      const generated = await crypto.createRecoveryKeyFromPassphrase();
      ctx.recoveryKey = generated.encodedPrivateKey;
      return generated;
    },
    setupNewKeyBackup: true,
  });
  if (!ctx.recoveryKey) throw new Error("no secret storage key was created");
  await until(() => crypto.isCrossSigningReady(), "cross-signing to be ready");
  // The SDK reads account data from its sync store: wait for /sync to bring it back.
  await until(() => crypto.isSecretStorageReady(), "secret storage to be ready");
  await until(async () => (await crypto.getCrossSigningStatus()).privateKeysInSecretStorage, "keys in 4S");
  const version = await until(() => crypto.getActiveSessionBackupVersion(), "an active backup");
  const info = await crypto.getKeyBackupInfo();
  if (info?.version !== version || info.algorithm !== BACKUP_ALGORITHM) {
    throw new Error(`backup info ${JSON.stringify(info)}`);
  }
  const trust = await crypto.isKeyBackupTrusted(info);
  if (!trust.trusted || !trust.matchesDecryptionKey) throw new Error(`trust ${JSON.stringify(trust)}`);
  result.backup_version = version;
  result.backup_auth_data = info.auth_data;
  result.master = await crypto.getCrossSigningKeyId("master");
  result.self_signing = await crypto.getCrossSigningKeyId("self_signing");
  result.user_signing = await crypto.getCrossSigningKeyId("user_signing");
  result.secret_storage_key = await ctx.a1.secretStorage.getDefaultKeyId();
  await until(
    async () => (await crypto.getDeviceVerificationStatus(ctx.a1.getUserId(), result.a1))?.crossSigningVerified,
    "A1 to see itself cross-signed",
  );
});

step("bob logs in and bootstraps cross-signing while syncing", async () => {
  // How a client usually does it: already syncing, first upload, no UIA needed.
  ctx.bob = await login(cfg.bob, "bob's device");
  await start(ctx.bob);
  result.bob = ctx.bob.getDeviceId();
  const uia = [];
  const crypto = ctx.bob.getCrypto();
  await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(cfg.bob, uia) });
  if (uia.join() !== "no auth needed") throw new Error(`UIA went ${uia}`);
  await until(() => crypto.isCrossSigningReady(), "bob's cross-signing to be ready");
  await until(
    async () => (await crypto.getDeviceVerificationStatus(ctx.bob.getUserId(), result.bob))?.crossSigningVerified,
    "bob to see his device cross-signed",
  );
  result.bob_master = await crypto.getCrossSigningKeyId("master");
});

step("encrypted room", async () => {
  const { room_id } = await ctx.a1.createRoom({
    name: "crypto room",
    invite: [ctx.bob.getUserId()],
    initial_state: [
      { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } },
    ],
  });
  ctx.roomId = room_id;
  result.room_id = room_id;
  await until(() => ctx.bob.getRoom(room_id)?.getMyMembership() === "invite", "bob's invite");
  await ctx.bob.joinRoom(room_id);
  // Alice shares her room key with bob's devices only once she sees him joined.
  await until(
    () => ctx.a1.getRoom(room_id)?.getMember(ctx.bob.getUserId())?.membership === "join",
    "alice to see bob join",
  );
  await until(() => ctx.bob.getCrypto().isEncryptionEnabledInRoom(room_id), "the room to be encrypted for bob");
});

step("exchange encrypted messages", async () => {
  await ctx.a1.sendTextMessage(ctx.roomId, "secret from alice");
  await until(() => findBody(ctx.bob, ctx.roomId, "secret from alice"), "bob to decrypt alice's message");
  await ctx.bob.sendTextMessage(ctx.roomId, "secret from bob");
  await until(() => findBody(ctx.a1, ctx.roomId, "secret from bob"), "alice to decrypt bob's message");
  // The server only ever saw ciphertext.
  const raw = await ctx.a1.createMessagesRequest(ctx.roomId, null, 20, sdk.Direction.Backward);
  const ciphertexts = raw.chunk.filter((e) => e.type === "m.room.encrypted" && e.content?.ciphertext).length;
  if (ciphertexts < 2 || JSON.stringify(raw).includes("secret from")) throw new Error("plaintext on the server");
});

step("room keys backed up", async () => {
  // Alice's outbound session and bob's inbound one, as the server stores them.
  result.backed_up_sessions = await backedUpSessions(ctx.a1, result.backup_version, 2);
  // A1 goes away, so a new device can only get the keys from the backup. (Bob stays: the
  // js-sdk turns the Rust crypto's key requests off, and he sends nothing more.)
  ctx.a1.stopClient();
});

step("second device restores from secret storage and backup", async () => {
  ctx.a2 = await login(cfg.alice, "A2");
  result.a2 = ctx.a2.getDeviceId();
  await start(ctx.a2);
  const crypto = ctx.a2.getCrypto();
  const keyId = result.secret_storage_key;
  ctx.a2.knownSecretStorageKeys.set(keyId, decodeRecoveryKey(ctx.recoveryKey));
  const room = await until(() => ctx.a2.getRoom(ctx.roomId), "the room on A2");
  const encrypted = room.getLiveTimeline().getEvents().filter((e) => e.isEncrypted());
  if (encrypted.length < 2) throw new Error(`A2 sees ${encrypted.length} encrypted events`);
  if (findBody(ctx.a2, ctx.roomId, "secret from alice")) throw new Error("A2 decrypted before restoring");
  // Cross-sign A2 with the keys from secret storage, once it knows the public keys.
  await until(async () => (await crypto.getCrossSigningStatus()).publicKeysOnDevice, "A2 to see the public keys");
  await crypto.bootstrapCrossSigning({});
  await until(() => crypto.isCrossSigningReady(), "cross-signing to be ready on A2");
  await crypto.loadSessionBackupPrivateKeyFromSecretStorage();
  const check = await crypto.checkKeyBackupAndEnable();
  if (check?.backupInfo?.version !== result.backup_version || !check.trustInfo.trusted) {
    throw new Error(`backup check ${JSON.stringify(check)}`);
  }
  const restored = await crypto.restoreKeyBackup();
  if (restored.imported < 2) throw new Error(`restored ${JSON.stringify(restored)}`);
  result.restored = restored.imported;
});

step("second device decrypts history", async () => {
  await until(
    () => findBody(ctx.a2, ctx.roomId, "secret from alice") && findBody(ctx.a2, ctx.roomId, "secret from bob"),
    "A2 to decrypt both messages",
  );
  // A2 learns of its new signature from the server: the device list change, /keys/query.
  const crypto = ctx.a2.getCrypto();
  await until(
    async () => (await crypto.getDeviceVerificationStatus(ctx.a2.getUserId(), result.a2))?.crossSigningVerified,
    "A2 to see itself cross-signed",
  );
});

step("second device replaces the key backup", async () => {
  // A new backup version: the old one is deleted, the new key stored in secret storage,
  // and A2 uploads every room key it has again.
  const crypto = ctx.a2.getCrypto();
  await crypto.resetKeyBackup();
  const version = await until(async () => {
    const active = await crypto.getActiveSessionBackupVersion();
    return active && active !== result.backup_version ? active : null;
  }, "the new backup to be active");
  result.new_backup_version = version;
  await backedUpSessions(ctx.a2, version, 2);
  let old;
  try {
    old = await ctx.a2.http.authedRequest(sdk.Method.Get, `/room_keys/version/${result.backup_version}`);
  } catch (e) {
    if (e?.data?.errcode !== "M_NOT_FOUND") throw e;
  }
  if (old) throw new Error(`the old backup is still there: ${JSON.stringify(old)}`);
  ctx.a2.stopClient();
});

step("bob sees the second device signed by alice", async () => {
  // Bob learns of A2 and its new signature through device_lists.changed in his /sync.
  await until(
    async () => (await ctx.bob.getCrypto().getDeviceVerificationStatus(ctx.a2.getUserId(), result.a2))?.signedByOwner,
    "bob to see A2 signed by alice's self-signing key",
  );
  ctx.bob.stopClient();
});

await run(result);
