/**
 * Saving an image out of the browser (the images list's Download, and the
 * job panel's).
 */
import { worker } from './bridge.js';
import { h } from './dom.js';

type SavePicker = (options: { suggestedName: string }) => Promise<FileSystemFileHandle & { createWritable(): Promise<WritableStream> }>;

/**
 * Saves an image out of OPFS, as the worker reads it: through a save
 * picker where the browser has one, else a download link. Either is
 * refused (with the lock's message) while a job writes the image. The
 * picker's stream holds a shared lock until it is saved, so no job starts
 * writing the image meanwhile; the link's File is a snapshot, so should
 * the image change, the browser fails the download rather than mix two
 * versions. Nothing is read into the page's memory. True once the picker
 * saved it; false when the person cancelled, or the browser's download has it.
 */
export async function saveImage(name: string): Promise<boolean> {
  const picker = (window as unknown as { showSaveFilePicker?: SavePicker }).showSaveFilePicker;
  if (picker) {
    const bytes = await worker().imageStream(name);
    try {
      let handle: Awaited<ReturnType<SavePicker>>;
      try {
        handle = await picker({ suggestedName: name });
      } catch (err) {
        if ((err as Error).name === 'AbortError') {
          await bytes.cancel();
          return false;
        }
        throw err;
      }
      await bytes.pipeTo(await handle.createWritable());
    } catch (err) {
      // Lets go of the lock (a stream that pipeTo ended already ignores this).
      await bytes.cancel().catch(() => {});
      throw err;
    }
    return true;
  }
  const file = await worker().imageFile(name);
  const url = URL.createObjectURL(file);
  const a = h('a', { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return false;
}
