// Playground: predictions with probability bars, the similarity of two texts' embeddings, streamed chat, and
// the exact curl and Python for the request that was just sent (with the key left as a variable).

import { api, get, streamChat } from "./api.js";
import { el, empty, errorBox, field, showError } from "./ui.js";

export function render(page, { arg }) {
  const box = el("div", { class: "card" });
  const work = el("div", { id: "playground-work" });
  const code = el("div", { id: "playground-code" });
  page.append(el("h2", {}, "Playground"), box, work, code);
  let chat = null;

  (async () => {
    let models;
    try {
      models = (await get("/v1/models")).data.filter((m) => m.task);
    } catch (error) {
      showError(box, error);
      return;
    }
    if (!models.length) {
      box.replaceChildren(empty("No models to try yet — train one on the Jobs page."));
      return;
    }
    const select = el("select", { id: "playground-model" }, models.map((m) => el("option", { value: m.id, selected: m.id === arg }, `${m.id} (${m.task})`)));
    const choose = () => {
      if (chat) chat.abort();
      const model = models.find((m) => m.id === select.value);
      code.replaceChildren();
      if (model.task === "text-classification") predictForm(work, code, model.id);
      else if (model.task === "embeddings") similarityForm(work, code, model.id);
      else if (model.task === "text-generation") chat = chatForm(work, code, model.id);
      else work.replaceChildren(empty(`The playground cannot try a ${model.task} model yet.`));
    };
    select.addEventListener("change", choose);
    box.replaceChildren(field("Model", select));
    choose();
  })();
  return () => chat && chat.abort();
}

/** The curl and Python (the openai client for /v1 OpenAI routes, httpx for ours) that send `body` to `path`. */
function showCode(code, path, body, { openai } = {}) {
  const json = JSON.stringify(body, null, 2);
  const curl = `curl ${location.origin}${path} \\\n  -H "Authorization: Bearer $OPENMAAS_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${json.replaceAll("'", "'\\''")}'`;
  const python = openai
    ? `import os\nfrom openai import OpenAI\n\nclient = OpenAI(base_url="${location.origin}/v1", api_key=os.environ["OPENMAAS_API_KEY"])\n${openai}`
    : `import os\nimport httpx\n\nanswer = httpx.post(\n    "${location.origin}${path}",\n    headers={"Authorization": f"Bearer {os.environ['OPENMAAS_API_KEY']}"},\n    json=${JSON.stringify(body)},\n)\nprint(answer.json())`;
  code.replaceChildren(
    el("div", { class: "card" },
      el("h3", {}, "What was sent"),
      el("div", { class: "grid" },
        el("div", {}, el("h3", {}, "curl"), el("pre", { id: "code-curl" }, curl)),
        el("div", {}, el("h3", {}, "Python"), el("pre", { id: "code-python" }, python)),
      ),
    ),
  );
}

const pyString = (text) => JSON.stringify(text); // a JSON string is a valid Python string literal

function predictForm(work, code, model) {
  const text = el("textarea", { id: "predict-input", rows: 3 }, "");
  const out = el("div", { id: "predict-output", "aria-live": "polite" });
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      const inputs = text.value.split("\n").map((line) => line.trim()).filter(Boolean);
      const body = { inputs };
      const path = `/v1/models/${model}/predict`;
      showCode(code, path, body);
      try {
        const answer = await api("POST", path, body);
        out.replaceChildren(...answer.predictions.map((p, i) => el("div", { class: "card prediction" },
          el("p", {}, el("strong", {}, inputs[i]), ` → ${p.label} (v${answer.version})`),
          ...Object.entries(p.scores).sort((a, b) => b[1] - a[1]).map(([label, score]) =>
            el("div", { class: "bar" }, el("span", {}, label), el("meter", { min: 0, max: 1, value: score, "aria-label": `probability of ${label}` }), el("span", {}, `${(100 * score).toFixed(1)}%`))),
        )));
      } catch (error) {
        out.replaceChildren(errorBox(error));
      }
    },
  }, field("Texts to classify", text, "one per line"), el("button", { type: "submit" }, "Predict"));
  work.replaceChildren(el("div", { class: "card" }, el("h3", {}, "Classify"), form, out));
}

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}

function similarityForm(work, code, model) {
  const first = el("input", { id: "embed-first", value: "A cat sits on the mat." });
  const second = el("input", { id: "embed-second", value: "A kitten rests on a rug." });
  const out = el("div", { id: "embed-output", "aria-live": "polite" });
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      const body = { model, input: [first.value, second.value], encoding_format: "float" };
      showCode(code, "/v1/embeddings", body, {
        openai: `answer = client.embeddings.create(model=${pyString(model)}, input=[${pyString(first.value)}, ${pyString(second.value)}])\nprint([len(item.embedding) for item in answer.data])`,
      });
      try {
        const answer = await api("POST", "/v1/embeddings", body);
        const [a, b] = answer.data.map((d) => d.embedding);
        const similarity = cosine(a, b);
        out.replaceChildren(el("p", {}, "Cosine similarity ", el("strong", { id: "embed-similarity" }, similarity.toFixed(4)), ` (${a.length} dimensions)`),
          el("meter", { min: -1, max: 1, value: similarity, "aria-label": "similarity" }));
      } catch (error) {
        out.replaceChildren(errorBox(error));
      }
    },
  }, field("First text", first), field("Second text", second), el("button", { type: "submit" }, "Compare"));
  work.replaceChildren(el("div", { class: "card" }, el("h3", {}, "Similarity of two texts"), form, out));
}

function chatForm(work, code, model) {
  const messages = [];
  const log = el("div", { class: "chat-log", id: "chat-log", "aria-live": "polite" }, empty("Say something to start."));
  const input = el("input", { id: "chat-input", autocomplete: "off" });
  const maxTokens = el("input", { id: "chat-max-tokens", type: "number", min: 1, max: 4096, value: 32 });
  const temperature = el("input", { id: "chat-temperature", type: "number", min: 0, max: 2, step: 0.1, value: 1 });
  const seed = el("input", { id: "chat-seed", type: "number", min: 0, step: 1, placeholder: "random" });
  const status = el("div");
  let running = null;
  const send = el("button", { type: "submit" }, "Send");
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      if (!input.value.trim()) return;
      if (log.querySelector(".empty")) log.replaceChildren();
      messages.push({ role: "user", content: input.value.trim() });
      log.append(el("p", {}, el("span", { class: "role" }, "user"), input.value.trim()));
      input.value = "";
      const reply = el("span", { class: "reply" });
      const line = el("p", { class: "assistant" }, el("span", { class: "role" }, "assistant"), reply);
      log.append(line);
      const body = { model, messages: [...messages], max_tokens: Number(maxTokens.value), temperature: Number(temperature.value) };
      if (seed.value.trim()) body.seed = Number(seed.value);
      body.stream = true;
      showCode(code, "/v1/chat/completions", body, {
        openai: `stream = client.chat.completions.create(\n    model=${pyString(model)},\n    messages=${JSON.stringify(messages)},\n    max_tokens=${body.max_tokens},\n    temperature=${body.temperature},\n${body.seed === undefined ? "" : `    seed=${body.seed},\n`}    stream=True,\n)\nfor chunk in stream:\n    if chunk.choices and chunk.choices[0].delta.content:\n        print(chunk.choices[0].delta.content, end="", flush=True)`,
      });
      running = new AbortController();
      send.disabled = true;
      status.replaceChildren();
      let text = "";
      let pieces = 0;
      try {
        const finish = await streamChat(body, (delta) => {
          text += delta;
          pieces += 1;
          reply.textContent = text;
          line.dataset.chunks = String(pieces);
          log.scrollTop = log.scrollHeight;
        }, running.signal);
        messages.push({ role: "assistant", content: text });
        status.replaceChildren(el("p", { class: "hint", id: "chat-finish" }, `${pieces} chunks streamed; finish reason: ${finish}`));
      } catch (error) {
        if (!running.signal.aborted) status.replaceChildren(errorBox(error));
      } finally {
        send.disabled = false;
      }
    },
  }, el("div", { class: "row" }, field("Message", input), field("Max tokens", maxTokens), field("Temperature", temperature), field("Seed", seed, "the same seed gives the same reply")), send);
  work.replaceChildren(el("div", { class: "card" }, el("h3", {}, "Chat"), log, form, status));
  return { abort: () => running && running.abort() };
}
