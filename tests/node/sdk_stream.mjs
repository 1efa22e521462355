// One streamed images.generate call with the official openai Node SDK, as a Node app would make
// it; prints one JSON line per event (without b64_json, with its decoded length), then
// {"done": true}, or on an error {"ok": false, status, message}.
// Usage: node sdk_stream.mjs BASE_URL KEY PROMPT [model] [partial_images]
import OpenAI from "openai";

const [baseURL, apiKey, prompt, model, partialImages] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
try {
  const stream = await client.images.generate({
    prompt,
    model: model ?? "gemini-3-pro-image",
    stream: true,
    partial_images: partialImages === undefined ? 2 : Number(partialImages),
  });
  for await (const event of stream) {
    const { b64_json, ...rest } = event;
    console.log(JSON.stringify({ ...rest, bytes: b64_json ? Buffer.from(b64_json, "base64").length : 0 }));
  }
  console.log(JSON.stringify({ done: true }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, status: err.status ?? null, message: err.message }));
}
