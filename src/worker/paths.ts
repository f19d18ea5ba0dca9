/** The OPFS directory that holds the images (the page reads it directly for downloads). */
export const IMAGE_DIRECTORY = 'images';
