-- placeholder: filled in by revision 0006's work
SELECT 1;
