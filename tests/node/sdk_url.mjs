// One images.generate call with response_format "url" through the official openai Node SDK, then
// the image fetched from its URL with no key, as a Node app would; prints one JSON line.
// Usage: node sdk_url.mjs BASE_URL KEY PROMPT
import OpenAI from "openai";

const [baseURL, apiKey, prompt] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const result = await client.images.generate({ prompt, model: "gemini-2.5-flash-image", response_format: "url" });
const image = await fetch(result.data[0].url);
const bytes = Buffer.from(await image.arrayBuffer());
console.log(JSON.stringify({
  url: result.data[0].url, b64_json: result.data[0].b64_json ?? null, size: result.size, status: image.status,
  contentType: image.headers.get("content-type"), length: bytes.length, png: bytes.subarray(1, 4).toString() === "PNG",
}));
