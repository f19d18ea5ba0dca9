/**
 * The picture of a job's dirty bitmap: one coloured cell per range of
 * chunks, as the worker draws them into each progress. It owns the canvas
 * and its legend, and says how many cells the canvas has room for (again
 * whenever its size changes), so the worker sends pictures that fit.
 */
import type { CellState } from '../mirror/types.js';
import { byId, h } from './dom.js';

const COLOURS: Record<CellState, string> = {
  clean: '#3a9d5d',
  zero: '#b9dcc5',
  dirty: '#e0a526',
  inflight: '#2f6fd6',
  failed: '#d23c3c',
};
const LABELS: Record<CellState, string> = { clean: 'copied', zero: 'zeroes', dirty: 'dirty', inflight: 'in flight', failed: 'failed' };
const CELL_PX = 8;

export class BitmapView {
  private readonly canvas = byId<HTMLCanvasElement>('bitmap');
  private wanted: number;
  /** The canvas's width as last laid out (kept by the observer: a draw never forces a layout). */
  private laidOutWidth = 0;
  /** What the canvas shows now: a progress with the same picture draws nothing. */
  private drawn = '';

  constructor(onCellsChanged: (cells: number) => void) {
    byId('bitmap-legend').replaceChildren(
      ...(Object.keys(COLOURS) as CellState[]).map((k) => h('span', {}, h('i', { style: `background:${COLOURS[k]}` }), LABELS[k])),
    );
    this.laidOutWidth = this.canvas.clientWidth;
    this.wanted = this.measure();
    new ResizeObserver(() => {
      this.laidOutWidth = this.canvas.clientWidth;
      const cells = this.measure();
      if (cells === this.wanted) return;
      this.wanted = cells;
      onCellsChanged(cells);
    }).observe(this.canvas);
  }

  /** How many cells of the smallest size the canvas has room for. */
  get cells(): number {
    return this.wanted;
  }

  private width(): number {
    return Math.max(CELL_PX, this.laidOutWidth || this.canvas.width);
  }

  private measure(): number {
    return Math.floor(this.width() / CELL_PX) * Math.floor(this.canvas.height / CELL_PX);
  }

  /** Draws `cells`; none (a finished job has no bitmap any more) keeps the last picture. */
  draw(cells: readonly CellState[]): void {
    if (cells.length === 0) return;
    const canvas = this.canvas;
    const width = this.width();
    const key = `${width}|${cells.join()}`;
    if (key === this.drawn) return;
    this.drawn = key;
    paintCells(canvas, cells, width);
  }
}

/** Paints `cells` into `canvas` (`width` px wide), as large as it allows; says what it shows in its description and data-cells. */
export function paintCells(canvas: HTMLCanvasElement, cells: readonly CellState[], width: number): void {
  if (canvas.width !== width) canvas.width = width;
  let px = Math.max(CELL_PX, Math.floor(Math.sqrt((width * canvas.height) / cells.length)));
  while (px > CELL_PX && Math.ceil(cells.length / Math.floor(width / px)) * px > canvas.height) px--;
  const perRow = Math.floor(width / px);
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const counts: Partial<Record<CellState, number>> = {};
  cells.forEach((cell, i) => {
    counts[cell] = (counts[cell] ?? 0) + 1;
    ctx.fillStyle = COLOURS[cell];
    ctx.fillRect((i % perRow) * px, Math.floor(i / perRow) * px, px - 1, px - 1);
  });
  const summary = (Object.keys(counts) as CellState[]).map((k) => `${counts[k]} ${LABELS[k]}`).join(', ');
  canvas.setAttribute('aria-description', `${cells.length} cells: ${summary}`);
  canvas.dataset.cells = cells.map((c) => c[0]).join('');
}
