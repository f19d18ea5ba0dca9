/** A tiny element builder: h('button', { type: 'button', onclick }, 'Pause'). */
type Attrs = Record<string, string | number | boolean | null | undefined | ((ev: Event) => void)>;
type Child = Node | string | number | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (typeof value === 'function') el.addEventListener(key.replace(/^on/, ''), value as EventListener);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from the page`);
  return el as T;
}


/** The page's error lines: each speaks of the last action, so the next action clears them all. */
const ERROR_LINES = ['form-error', 'job-error', 'fault-error', 'interrupted-error', 'images-message', 'nbd-message'];

export function clearErrorLines(): void {
  for (const id of ERROR_LINES) {
    const line = document.getElementById(id);
    if (line?.classList.contains('error') && line.textContent) {
      line.textContent = '';
      if (line.classList.contains('message')) line.classList.remove('error');
    }
  }
}
