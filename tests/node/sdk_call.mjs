// One call with the official openai Node SDK, as a Node app would make it; prints what the app
// can see as one JSON line. Usage: node sdk_call.mjs BASE_URL KEY PROMPT [maxRetries]
import OpenAI from "openai";

const [baseURL, apiKey, prompt, maxRetries] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: maxRetries === undefined ? 2 : Number(maxRetries) });
try {
  const result = await client.images.generate({ prompt, model: "gemini-2.5-flash-image" });
  console.log(JSON.stringify({ ok: true, images: result.data.length, bytes: Buffer.from(result.data[0].b64_json, "base64").length }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, status: err.status, message: err.message, error: err.error ?? null }));
}
