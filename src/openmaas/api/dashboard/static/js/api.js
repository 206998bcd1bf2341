// The public API, called with the signed-in key: JSON requests, uploads with progress, and event streams.
// The key lives in this tab's sessionStorage only, and travels in the Authorization header, never in a URL.

const KEY = "openmaas.key";

export const session = {
  key: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An API failure, carrying the error body the server sent ({"error": {"message", "type", "param", "code"}}). */
export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(typeof error === "string" ? error : error.message || `the server answered ${status}`);
    this.status = status;
    this.type = error.type || null;
    this.code = error.code || null;
    this.param = error.param || null;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.key()}`, ...extra };
}

async function parse(response) {
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: { message: text } };
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export async function api(method, path, body) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return parse(await fetch(path, init));
}

export const get = (path) => api("GET", path);

/** A list route's items, following `has_more` pages. */
export async function list(path) {
  const items = [];
  let after = null;
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(after ? `${path}${sep}after=${encodeURIComponent(after)}` : path);
    items.push(...page.data);
    if (!page.has_more || !page.data.length) return items;
    after = page.data[page.data.length - 1].id;
  }
}

/** A multipart upload through XMLHttpRequest, whose upload events give a real progress bar. */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Authorization", `Bearer ${session.key()}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = { error: { message: xhr.responseText } };
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, { error: { message: "the upload failed: network error" } })));
    xhr.send(form);
  });
}

/** Downloads a file the key may read (a link cannot carry the Authorization header). */
export async function download(path, filename) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) await parse(response);
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Reads Server-Sent Events from a response body, calling onEvent({id, event, data}) for each. */
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { id: null, event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(text);
        else if (field === "id") event.id = text;
        else if (field === "event") event.event = text;
      }
      if (event.data.length || event.id !== null) onEvent({ ...event, data: event.data.join("\n") });
    }
  }
}

/**
 * Follows a job's event stream until its last event, reconnecting with Last-Event-ID after a dropped connection
 * (EventSource cannot send an Authorization header, so this is fetch() streaming). Stops when `signal` aborts.
 * `isFinal(event)` tells the last event; `onReconnect(lastId)` is told of each new connection after the first.
 */
export async function followJob(jobId, onEvent, signal, { isFinal, onReconnect }) {
  const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
  let lastId = "";
  let delay = 500;
  for (let attempt = 0; !signal.aborted; attempt++) {
    if (attempt > 0 && onReconnect) onReconnect(lastId);
    let finished = false;
    let received = 0;
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId) extra["Last-Event-ID"] = lastId;
      const response = await fetch(`${path}/events?stream=true`, { headers: headers(extra), signal });
      if (!response.ok) await parse(response);
      await readEvents(response, (event) => {
        if (event.id) lastId = event.id;
        received += 1;
        const payload = JSON.parse(event.data);
        onEvent(payload);
        if (isFinal(payload)) finished = true;
      });
      delay = 500;
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status >= 400 && error.status < 500) throw error;
    }
    if (finished) return;
    // The stream closed before the job's last event: a dropped connection, so go on from the last event seen.
    // Only a connection that brought nothing to a job that has ended (its last event was lost) stops here.
    if (!received) {
      try {
        const job = await get(path);
        if (["succeeded", "failed", "cancelled"].includes(job.status)) return; // the caller reads the job again
      } catch {
        /* the next connection reports what is wrong */
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 8000);
    }
  }
}

/** A streamed chat completion: calls onDelta(text) per chunk; resolves with the finish reason. */
export async function streamChat(body, onDelta, signal) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) await parse(response);
  let finish = null;
  await readEvents(response, (event) => {
    if (event.data === "[DONE]") return;
    const chunk = JSON.parse(event.data);
    for (const choice of chunk.choices || []) {
      if (choice.delta && choice.delta.content) onDelta(choice.delta.content);
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  });
  return finish;
}
