// matrix-js-sdk's Rust crypto and device dehydration (MSC3814) against a real pocketserver:
// alice's first device sets up cross-signing and secret storage and dehydrates a device;
// bob sends an encrypted message while it is the only other device of alice's; alice's
// first device logs out; a new login rehydrates the device, gets bob's room key from
// the messages sent to it, and reads the message. There is no key backup, so the key
// can only have come from the dehydrated device.
//
// Usage: node dehydration_scenario.mjs '{"baseUrl": "...", "alice": {"user": "...",
//                                        "password": "..."}, "bob": {...}}'
// Prints one "ok <step>" line per step and, last, "result <JSON>" with what the Python
// test checks on the server; exits 1 with "FAIL <step>: <why>" on the first failure.

import * as sdk from "matrix-js-sdk";
import { CryptoEvent, decodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/index.js";

import { findBody, harness, passwordUia, until } from "./crypto_harness.mjs";

const cfg = JSON.parse(process.argv[2]);
const MSC3814 = "/_matrix/client/unstable/org.matrix.msc3814.v1";
const { login, start, step, run } = harness(cfg);

const dehydratedDevice = (client) =>
  client.http.authedRequest(sdk.Method.Get, "/dehydrated_device", undefined, undefined, { prefix: MSC3814 });

const ctx = {};
const result = {};

step("alice sets up cross-signing and secret storage", async () => {
  ctx.a1 = await login(cfg.alice, "A1");
  await start(ctx.a1);
  result.a1 = ctx.a1.getDeviceId();
  const crypto = ctx.a1.getCrypto();
  await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(cfg.alice) });
  await crypto.bootstrapSecretStorage({
    createSecretStorageKey: async () => {
      const generated = await crypto.createRecoveryKeyFromPassphrase();
      ctx.recoveryKey = generated.encodedPrivateKey;
      return generated;
    },
  });
  // Both need the account data just written to come back through /sync.
  await until(() => crypto.isCrossSigningReady(), "cross-signing to be ready");
  await until(() => crypto.isSecretStorageReady(), "secret storage to be ready");
  result.secret_storage_key = await ctx.a1.secretStorage.getDefaultKeyId();
  result.self_signing = await crypto.getCrossSigningKeyId("self_signing");
});

step("alice dehydrates a device", async () => {
  const crypto = ctx.a1.getCrypto();
  if (!(await crypto.isDehydrationSupported())) throw new Error("dehydration is not supported");
  const uploaded = new Promise((resolve) => ctx.a1.once(CryptoEvent.DehydratedDeviceUploaded, resolve));
  await crypto.startDehydration({ createNewKey: true });
  await uploaded;
  const found = await dehydratedDevice(ctx.a1);
  if (!found.device_id || typeof found.device_data?.algorithm !== "string") {
    throw new Error(`GET /dehydrated_device answered ${JSON.stringify(found)}`);
  }
  result.first_dehydrated = found.device_id;
  result.algorithm = found.device_data.algorithm;
  // Alice's own client sees it as a cross-signed device of hers, once the upload's
  // device_lists.changed has come through /sync and the client has queried again.
  await until(async () => {
    const devices = await crypto.getUserDeviceInfo([ctx.a1.getUserId()], true);
    return devices.get(ctx.a1.getUserId())?.get(found.device_id)?.dehydrated;
  }, "the dehydrated device in alice's device list (device_lists.changed in /sync)");
  const status = await crypto.getDeviceVerificationStatus(ctx.a1.getUserId(), found.device_id);
  if (!status?.crossSigningVerified) throw new Error("the dehydrated device is not cross-signed");
});

step("bob sends an encrypted message", async () => {
  ctx.bob = await login(cfg.bob, "bob's device");
  await start(ctx.bob);
  const { room_id } = await ctx.bob.createRoom({
    name: "dehydration room",
    invite: [ctx.a1.getUserId()],
    initial_state: [
      { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } },
    ],
  });
  ctx.roomId = room_id;
  result.room_id = room_id;
  await until(() => ctx.a1.getRoom(room_id)?.getMyMembership() === "invite", "alice's invite");
  await ctx.a1.joinRoom(room_id);
  await until(
    () => ctx.bob.getRoom(room_id)?.getMember(ctx.a1.getUserId())?.membership === "join",
    "bob to see alice join",
  );
  await ctx.bob.sendTextMessage(room_id, "for the dehydrated device");
  await until(() => findBody(ctx.a1, room_id, "for the dehydrated device"), "A1 to decrypt it");
  // The room key went to the dehydrated device too.
  const path = `/dehydrated_device/${encodeURIComponent(result.first_dehydrated)}/events`;
  const page = await ctx.a1.http.authedRequest(sdk.Method.Post, path, undefined, {}, { prefix: MSC3814 });
  const fromBob = page.events.filter((e) => e.sender === ctx.bob.getUserId() && e.type === "m.room.encrypted");
  if (fromBob.length < 1) throw new Error(`dehydrated device's messages: ${JSON.stringify(page)}`);
  result.messages_for_dehydrated = fromBob.length;
});

step("alice's only device logs out", async () => {
  ctx.bob.stopClient(); // nobody online could share the key
  await ctx.a1.logout(true);
  ctx.a1.stopClient();
});

step("a new login rehydrates the device", async () => {
  ctx.a2 = await login(cfg.alice, "A2");
  result.a2 = ctx.a2.getDeviceId();
  await start(ctx.a2);
  const crypto = ctx.a2.getCrypto();
  ctx.a2.knownSecretStorageKeys.set(result.secret_storage_key, decodeRecoveryKey(ctx.recoveryKey));
  // Cross-sign A2 with the keys from secret storage, once it knows alice's identity.
  await crypto.getUserDeviceInfo([ctx.a2.getUserId()], true);
  await crypto.bootstrapCrossSigning({});
  await until(() => crypto.isCrossSigningReady(), "cross-signing to be ready on A2");
  const room = await until(() => ctx.a2.getRoom(ctx.roomId), "the room on A2");
  const encrypted = room.getLiveTimeline().getEvents().filter((e) => e.isEncrypted());
  if (encrypted.length < 1) throw new Error("A2 sees no encrypted event");
  if (findBody(ctx.a2, ctx.roomId, "for the dehydrated device")) throw new Error("A2 decrypted too early");
  const progress = [];
  ctx.a2.on(CryptoEvent.RehydrationProgress, (roomKeys, toDevice) => progress.push([roomKeys, toDevice]));
  const errors = [];
  ctx.a2.on(CryptoEvent.RehydrationError, (msg) => errors.push(msg));
  const completed = new Promise((resolve) => ctx.a2.once(CryptoEvent.RehydrationCompleted, resolve));
  const uploaded = new Promise((resolve) => ctx.a2.once(CryptoEvent.DehydratedDeviceUploaded, resolve));
  await crypto.startDehydration();
  if (errors.length) throw new Error(`rehydration failed: ${errors}`);
  await completed;
  await uploaded;
  const last = progress.at(-1) ?? [0, 0];
  if (last[0] < 1) throw new Error(`rehydration progress ${JSON.stringify(progress)}`);
  result.room_keys = last[0];
  result.to_device = last[1];
  // A new dehydrated device replaced the old one.
  result.second_dehydrated = (await dehydratedDevice(ctx.a2)).device_id;
  if (result.second_dehydrated === result.first_dehydrated) throw new Error("not replaced");
});

step("the new login reads bob's message", async () => {
  await until(() => findBody(ctx.a2, ctx.roomId, "for the dehydrated device"), "A2 to decrypt the message");
  ctx.a2.stopClient();
});

await run(result);
